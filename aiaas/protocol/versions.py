"""Public shapes of registered models, their versions and deployment revisions (issue 14)."""

from __future__ import annotations

from typing import Any


def registered_public(rm: Any, aliases: dict[str, int]) -> dict[str, Any]:
    return {"id": rm.name, "object": "registered_model", "name": rm.name, "latest_version": rm.latest_version,
            "aliases": aliases, "created_at": rm.created_at, "updated_at": rm.updated_at}


def version_public(rm: Any, mv: Any, *, aliases_of: dict[str, int], previous: Any | None = None) -> dict[str, Any]:
    return {
        "id": f"{rm.name}/{mv.version}", "object": "model_version", "registered_model": rm.name, "version": mv.version,
        "name": f"{rm.name}/{mv.version}", "model": mv.model_id, "job_id": mv.job_id,
        "aliases": sorted(a for a, v in aliases_of.items() if v == mv.version),
        "lineage": mv.lineage, "metrics": mv.metrics,
        "previous": None if previous is None else {"version": previous.version, "metrics": previous.metrics},
        "created_at": mv.created_at,
    }


def revision_public(rev: Any) -> dict[str, Any]:
    return {"id": rev.id, "object": "deployment.revision", "revision": rev.revision, "spec": rev.spec,
            "reason": rev.reason, "actor": rev.actor_key_id, "created_at": rev.created_at}
