"""The blob store factory: one registry keyed by URI scheme, outside the base module.

That the base module and its backends import no circle is checked by `lint-imports` (the
`acyclic` contract in pyproject.toml), which sees imports inside functions too."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aiaas.core.errors import ConfigurationError
from aiaas.core.settings import Settings
from aiaas.store import blob_factory
from aiaas.store.blob_factory import create_blob_store, register_blob_scheme
from aiaas.store.blobs import BlobStore, FileBlobStore


def test_a_plain_path_and_a_file_url_give_the_same_file_store(tmp_path: Path) -> None:
    plain = create_blob_store(tmp_path / "blobs")
    url = create_blob_store(f"file://{tmp_path / 'blobs'}")
    assert isinstance(plain, FileBlobStore) and isinstance(url, FileBlobStore)
    assert plain.root == url.root == (tmp_path / "blobs").resolve()
    blob = url.put("org/file-1", io.BytesIO(b"abc"))
    assert plain.local_path(blob.uri).read_bytes() == b"abc"


def test_s3_urls_get_the_s3_store_configured_from_the_settings_given(tmp_path: Path) -> None:
    pytest.importorskip("boto3", reason="the s3 extra is not installed: pip install 'aiaas[s3]'")
    from aiaas.store.s3 import S3BlobStore

    settings = Settings(env="test", data_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:9")
    store = create_blob_store("s3://bucket/prefix/", settings)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("bucket", "prefix")
    assert store.endpoint_url == "http://127.0.0.1:9" and store.cache_dir == tmp_path / "cache" / "s3"


def test_an_unknown_scheme_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown scheme 'gs'.*file://, s3://") as info:
        create_blob_store("gs://bucket/prefix")
    assert info.value.param == "blob_store_url"


def test_a_registered_scheme_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blob_factory, "_LOADERS", dict(blob_factory._LOADERS))
    seen: list[tuple[str, Settings | None]] = []

    def loader(uri: str, settings: Settings | None) -> BlobStore:
        seen.append((uri, settings))
        return FileBlobStore(tmp_path)

    register_blob_scheme("mem", loader)
    store = create_blob_store("mem://x/y")
    assert isinstance(store, FileBlobStore) and seen == [("mem://x/y", None)]

