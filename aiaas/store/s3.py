"""The `s3://bucket/prefix` blob store (install extra `s3`): blobs shared by every node of a cluster.

Why it looks the way it does:
- Uploads stream through a multipart upload part by part, so a 512 MiB dataset never sits
  in memory or on local disk, and crossing `max_bytes` aborts the upload: nothing is kept.
- Loaders (tokenizers, ONNX Runtime, pandas) need real files, so `local_path()` keeps a
  local cache mirror. Each cached object remembers the ETag it was downloaded at; a
  re-uploaded artifact (a resumed job writes its model again) is fetched afresh, an
  unchanged one costs a single HEAD/LIST.
- A "directory" (a model artifact) is every object under `<key>/`; `put_dir`, `local_path`
  and `delete` treat such a prefix as one blob.
- Credentials come from boto3's default chain (env, profile, instance role); the endpoint
  from `AIAAS_S3_ENDPOINT_URL` for S3-compatible servers (MinIO, Ceph, moto).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from aiaas.core.errors import ConfigurationError, PayloadTooLarge, Unavailable
from aiaas.store.blobs import BlobStore, StoredBlob

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "s3:// blob stores need boto3: pip install 'aiaas[s3]'"
    ) from exc

if TYPE_CHECKING:
    from aiaas.core.settings import Settings

log = logging.getLogger(__name__)

# S3 parts must be >= 5 MiB except the last; 8 MiB is boto3's own default part size.
PART_BYTES = 8 * 1024 * 1024
READ_CHUNK = 1024 * 1024
DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts
_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix has no slashes at its ends."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigurationError(f"Blob store URL {url!r} names no bucket; use s3://bucket/prefix.")
    return bucket, prefix.strip("/")


def _clean_key(key: str) -> str:
    """Refuse keys that could climb out of the store's prefix (or out of the local cache)."""
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or any(p in ("..", ".") for p in parts) or "\\" in key:
        raise ValueError(f"blob key {key!r} is not a plain relative path")
    return "/".join(parts)


class S3BlobStore(BlobStore):
    """Blobs under `s3://bucket/prefix`; see the module docstring for the cache and multipart rules."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        cache_dir: Path | None = None,
        settings: Settings | None = None,
        client: Any = None,
    ) -> None:
        if settings is None and (endpoint_url is None or cache_dir is None):
            from aiaas.core.settings import get_settings

            settings = get_settings()
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url if endpoint_url is not None else (
            settings.s3_endpoint_url if settings is not None else None)
        if cache_dir is None:
            assert settings is not None
            cache_dir = settings.data_dir / "cache" / "s3"
        self.cache_dir = Path(cache_dir).resolve()
        self._objects = self.cache_dir / "objects" / self.bucket
        self._etags = self.cache_dir / "etags" / self.bucket
        self._client = client
        self._client_lock = threading.Lock()

    # ---- plumbing --------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """Created on first use: constructing the store (at API start-up) does no network I/O."""
        with self._client_lock:
            if self._client is None:
                config: dict[str, Any] = {
                    "retries": {"max_attempts": 4, "mode": "standard"},
                    "connect_timeout": 5,
                    "read_timeout": 60,
                }
                if self.endpoint_url:
                    # S3-compatible servers rarely serve virtual-host bucket names.
                    config["s3"] = {"addressing_style": "path"}
                # A Session per store: boto3's default session is not thread-safe to create clients from.
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, config=Config(**config))
            return self._client

    def _full_key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, full_key: str) -> str:
        return f"s3://{self.bucket}/{full_key}"

    def _key_of(self, uri: str) -> str:
        """The object key of a URI, which must lie under this store's bucket and prefix."""
        bucket, key = parse_s3_url(uri)
        if bucket != self.bucket or not key:
            raise ValueError(f"blob URI {uri!r} is outside the store {self.url!r}")
        key = _clean_key(key)
        if self.prefix and not key.startswith(self.prefix + "/"):
            raise ValueError(f"blob URI {uri!r} is outside the store {self.url!r}")
        return key

    def key_of(self, uri: str) -> str:
        """The key `uri` was stored under, relative to the store's prefix (the inverse of put/put_dir)."""
        full = self._key_of(uri)
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _unavailable(self, action: str, exc: Exception) -> Unavailable:
        log.warning("S3 %s failed on %s: %s", action, self.url, exc)
        return Unavailable(f"The blob store ({self.url}) could not {action}; try again shortly.")

    # ---- writes ----------------------------------------------------------------------------
    def put(self, key: str, src: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob:
        full = self._full_key(key)
        digest = hashlib.sha256()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        buf = bytearray()
        try:
            while True:
                chunk = src.read(READ_CHUNK)
                if chunk:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"File is larger than the upload limit of {max_bytes} bytes.")
                    digest.update(chunk)
                    buf += chunk
                if len(buf) >= PART_BYTES or (not chunk and upload_id is not None and buf):
                    if upload_id is None:
                        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
                    number = len(parts) + 1
                    body = bytes(buf[:PART_BYTES]) if chunk else bytes(buf)
                    del buf[: len(body)]
                    resp = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                   PartNumber=number, Body=body)
                    parts.append({"ETag": resp["ETag"], "PartNumber": number})
                if not chunk:
                    break
            if upload_id is None:  # small enough for one request
                self.client.put_object(Bucket=self.bucket, Key=full, Body=bytes(buf))
            else:
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
                upload_id = None
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("store the file", exc) from exc
        finally:
            if upload_id is not None:  # too large, a read error, or S3 failed: keep nothing
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
                except (BotoCoreError, ClientError):
                    log.warning("could not abort multipart upload of %s", full, exc_info=True)
        return StoredBlob(uri=self._uri(full), size=size, sha256=digest.hexdigest())

    def put_dir(self, key: str, src: Path) -> str:
        """Upload every file under `src` to `<key>/…`, then drop objects a previous upload left there.

        Not atomic across files (S3 has no rename): readers find an artifact by its URI only
        after the job records it, which happens after this returns.
        """
        full = self._full_key(key)
        src = Path(src)
        written: set[str] = set()
        try:
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                object_key = f"{full}/{path.relative_to(src).as_posix()}"
                self.client.upload_file(str(path), self.bucket, object_key)
                written.add(object_key)
            stale = [k for k in self._list(full + "/") if k not in written]
            self._delete_keys(stale)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("store the model files", exc) from exc
        return self._uri(full)

    def delete(self, uri: str) -> None:
        """Delete the object at `uri` and everything under `uri/`; missing objects are fine."""
        key = self._key_of(uri)
        try:
            self._delete_keys([key, *self._list(key + "/")])
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("delete the file", exc) from exc
        self._drop_cached(key)

    # ---- reads -----------------------------------------------------------------------------
    def local_path(self, uri: str) -> Path:
        """A cached local copy: a file for an object, a directory for a prefix (a model artifact).

        Like the file store, a URI that names nothing yields a path that does not exist.
        """
        key = self._key_of(uri)
        local = self._objects / key
        try:
            head = self._head(key)
            if head is not None:
                self._fetch(key, head["ETag"])
                return local
            listing = self._list_with_etags(key + "/")
            if not listing:
                return local
            for object_key, etag in listing.items():
                self._fetch(object_key, etag)
            self._prune(key, set(listing))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable("read the file", exc) from exc
        return local

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
            return head
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise

    def _fetch(self, key: str, etag: str) -> None:
        """Download `key` unless the cached copy has this ETag. Atomic: readers never see half a file."""
        dest = self._objects / key
        marker = self._etags / key
        if dest.is_file() and marker.is_file() and marker.read_text() == etag:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as out:
                self.client.download_fileobj(self.bucket, key, out)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        marker.write_text(etag)

    def _prune(self, key: str, keep: set[str]) -> None:
        """Remove cached files of a prefix that are no longer in the store."""
        root = self._objects / key
        for path in root.rglob("*"):
            if path.is_file() and not path.name.startswith(".download-"):
                object_key = path.relative_to(self._objects).as_posix()
                if object_key not in keep:
                    path.unlink(missing_ok=True)
                    (self._etags / object_key).unlink(missing_ok=True)

    def _drop_cached(self, key: str) -> None:
        for root in (self._objects, self._etags):
            path = root / key
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # ---- listing and bulk delete -----------------------------------------------------------
    def _list_with_etags(self, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["ETag"]
        return out

    def _list(self, prefix: str) -> list[str]:
        return list(self._list_with_etags(prefix))

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + DELETE_BATCH]]
            resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            errors = resp.get("Errors") or []
            if errors:
                raise Unavailable(f"The blob store ({self.url}) could not delete {len(errors)} objects, "
                                  f"e.g. {errors[0].get('Key')}: {errors[0].get('Message')}")

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r}, endpoint_url={self.endpoint_url!r})"
