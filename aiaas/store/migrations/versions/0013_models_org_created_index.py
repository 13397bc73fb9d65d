"""an organisation's models listed newest first from an index

GET /v1/models reads the organisation's models a batch at a time, keyset on (created_at, id), newest first
(registry.model_pages). Through the org_id index alone, every batch's query fetched all the organisation's
models, card and lineage included (~5 KB each), and sorted them in a temporary b-tree to return the next
batch: with 600 models, ~3 MB sorted per query, several queries per listing, memory the API process kept
growing into during the soak (bench/README.md, "Soak"). Through (org_id, created_at, id) a batch reads only
its own rows, in order.

Revision ID: 0013_models_org_created_index
Revises: 0012_org_id_id_indexes
Create Date: 2026-12-07
"""
from alembic import op


revision = '0013_models_org_created_index'
down_revision = '0012_org_id_id_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_models_org_id_created_at_id', 'models', ['org_id', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_models_org_id_created_at_id', table_name='models')
