"""Blob stores by URI scheme: one registry, so the base module (blobs.py) imports no backend.

`file:///srv/blobs` (or a plain path) gives a FileBlobStore; `s3://bucket/prefix` an S3BlobStore,
whose module (and boto3, the `s3` extra) is imported only when such a URL is asked for. Backends
import `aiaas.store.blobs` for the base class; only this module imports the backends, so nothing
imports in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiaas.core.errors import ConfigurationError
from aiaas.store.blobs import BlobStore, FileBlobStore

if TYPE_CHECKING:
    from aiaas.core.settings import Settings

# A loader gets the full URI and the settings that configure it (endpoint, cache dir), or None
# for the process-wide settings.
BlobStoreLoader = Callable[[str, "Settings | None"], BlobStore]


def _file_store(uri: str, _settings: Settings | None) -> BlobStore:
    return FileBlobStore(Path(uri.removeprefix("file://")))


def _s3_store(uri: str, settings: Settings | None) -> BlobStore:
    from aiaas.store.s3 import S3BlobStore  # guarded import: needs the `s3` extra

    return S3BlobStore(uri, settings=settings)


_LOADERS: dict[str, BlobStoreLoader] = {"file": _file_store, "s3": _s3_store}


def register_blob_scheme(scheme: str, loader: BlobStoreLoader) -> None:
    """Make `<scheme>://...` URLs open with `loader` (a backend in its own module registers itself)."""
    _LOADERS[scheme] = loader


def create_blob_store(uri_root: str | Path, settings: Settings | None = None) -> BlobStore:
    """The blob store a URL names: a plain path or `file://` → FileBlobStore; `s3://` → S3 (extra).

    `settings` gives a remote store its endpoint and cache directory (else the process-wide settings).
    """
    text = str(uri_root)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return _file_store(text, settings)
    loader = _LOADERS.get(scheme)
    if loader is None:
        known = ", ".join(f"{s}://" for s in sorted(_LOADERS))
        raise ConfigurationError(f"Blob store URL {text!r} has an unknown scheme {scheme!r}; use one of {known} "
                                 "(AIAAS_BLOB_STORE_URL).", param="blob_store_url")
    return loader(text, settings)
