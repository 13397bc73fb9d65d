"""What a Ray task or Serve replica rebuilds on whichever node it lands: settings, store, blobs.

Settings travel as a plain dict, without the master secret: task and actor arguments are
kept in Ray's object store, where anything else running on the cluster could read them.
Each node brings its own secret (AIAAS_SECRET_KEY, or `<data_dir>/secret.key`), as an
`aiaas worker` host does.
"""

from __future__ import annotations

from typing import Any

from aiaas.core.settings import Settings
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.blobs import BlobStore

SECRET_FIELDS = frozenset({"secret_key"})


def settings_payload(settings: Settings, **overrides: Any) -> dict[str, Any]:
    payload = settings.model_dump(mode="json", exclude=set(SECRET_FIELDS))
    payload.update({k: v for k, v in overrides.items() if v is not None})
    return payload


def settings_from_payload(payload: dict[str, Any]) -> Settings:
    """Settings as sent, plus this node's own secret from its environment or data dir."""
    return Settings(**payload)


def blob_store_for(settings: Settings) -> BlobStore:
    """The blob store these settings name, configured from them (not from the process-wide settings)."""
    return create_blob_store(settings.blobs_url, settings)
