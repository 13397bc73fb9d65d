"""Blob storage: the BlobStore base class and the `file://` store (the default).

`s3://` lives in aiaas/store/s3.py behind the `s3` extra; aiaas/store/blob_factory.py picks the
store a URL names (`create_blob_store`).

Uploaded files and model artifacts are written through a BlobStore so that the API
and the workers (possibly on other machines) find them by URI alone. Readers use
`open_local(uri)`, a context manager: for a plain store it is just the local path, for
the encrypting store (aiaas/store/encrypted.py) a private decrypted copy that is deleted
when the block ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiaas.core.errors import PayloadTooLarge

CHUNK = 1024 * 1024
# What put() asks its source for at once: more than a frame of the encrypting store (1 MiB + its tag),
# so that each frame arrives whole and is written as it is, not copied in two.
PUT_READ = 4 * CHUNK


@dataclass(frozen=True)
class StoredBlob:
    uri: str
    size: int
    sha256: str


class BlobStore(ABC):
    """Write once, read many. Keys are relative paths like `<org>/<file-id>`."""

    @abstractmethod
    def put(self, key: str, src: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob:
        """Stream `src` into the store; raise PayloadTooLarge past max_bytes (nothing kept)."""

    @abstractmethod
    def put_dir(self, key: str, src: Path) -> str:
        """Copy a local directory (a model artifact) into the store; returns its URI."""

    @abstractmethod
    def local_path(self, uri: str) -> Path:
        """A local file holding the blob's bytes as stored (a cached copy for remote stores)."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the blob; missing blobs are fine."""

    @contextlib.contextmanager
    def open_local(self, uri: str) -> Iterator[Path]:
        """A local path to the blob's plaintext (file or directory), valid inside the `with` block."""
        yield self.local_path(uri)

    def read_stream(self, uri: str) -> Iterator[bytes]:
        """The blob's plaintext bytes in chunks (a file, not a directory)."""
        with self.open_local(uri) as path, open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def key_of(self, uri: str) -> str:
        """The key a URI was stored under (the inverse of put/put_dir); encryption binds ciphertext to it."""
        raise NotImplementedError(f"{type(self).__name__} cannot map URIs back to keys.")


class FileBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, uri: str) -> Path:
        if not uri.startswith("file://"):
            raise ValueError(f"not a file:// URI: {uri}")
        path = Path(uri[len("file://") :]).resolve()
        if self.root not in path.parents:
            raise ValueError("blob URI outside the store root")
        return path

    def put(self, key: str, src: BinaryIO, *, max_bytes: int | None = None, digest: bool = True) -> StoredBlob:
        """As BlobStore.put; `digest=False` skips the SHA-256 (its `sha256` is then ""): for a caller that
        records a digest of its own, such as the encrypting store (the plaintext's), so that an upload's
        bytes are hashed once, not twice."""
        dest = (self.root / key).resolve()
        if self.root not in dest.parents:
            raise ValueError("blob key outside the store root")
        dest.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256() if digest else None
        size = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(PUT_READ):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"File is larger than the upload limit of {max_bytes} bytes.")
                    if hasher is not None:
                        hasher.update(chunk)
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredBlob(uri=f"file://{dest}", size=size, sha256=hasher.hexdigest() if hasher is not None else "")

    def put_dir(self, key: str, src: Path) -> str:
        dest = (self.root / key).resolve()
        if self.root not in dest.parents:
            raise ValueError("blob key outside the store root")
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return f"file://{dest}"

    def local_path(self, uri: str) -> Path:
        return self._path(uri)

    def key_of(self, uri: str) -> str:
        return self._path(uri).relative_to(self.root).as_posix()

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

