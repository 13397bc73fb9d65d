"""Model versions, lineage, model cards, artifact storage and export."""
