"""Encryption at rest for blobs: a per-organisation data key, wrapped by the master secret.

Why a wrapper around any BlobStore: the file store and the S3 store stay simple byte
movers, and every byte they hold for an organisation is ciphertext (AES-256-GCM frames,
aiaas/security/crypto.py). The organisation is the first segment of every blob key
(`<org>/files/<id>`, `<org>/models/<job>/onnx`), so the store knows whose key to use.

- Each organisation has one random data key, stored only wrapped (by the key-encryption
  key derived from the master secret) in `organizations.wrapped_data_key`; it is created
  on first use. Deleting the organisation row destroys it, and with it every copy of
  the organisation's blobs (backups included) becomes unreadable.
- Every file's ciphertext is bound to its blob key (the associated data), so a
  ciphertext moved to another record or organisation does not decrypt.
- Plaintext exists only inside `open_local()`: a private directory under /dev/shm
  (memory; a 0700 temp dir where there is none) removed when the block ends. Its name
  carries the owning process's pid and start time, so `sweep_stale_plaintext()` (run when
  `aiaas serve` and `aiaas worker` start) removes what a killed process left, never a
  live process's directory.
- Blobs without the encryption header are refused (`unencrypted_blob`), never read as
  plaintext: a header-less blob is either old data or a file put there by someone else.
  `aiaas secrets migrate-blobs` encrypts old plaintext blobs in place.
- Every use of a data key re-checks (one primary-key read) that its organisation still has
  it, so deleting an organisation makes its key unusable in every running process, not
  only in the one that deleted it; the unwrapped key itself is cached per process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import select, update

from aiaas.core.errors import PayloadTooLarge, UnencryptedBlob
from aiaas.core.streams import ChunkReader
from aiaas.security import crypto
from aiaas.store.blobs import BlobStore, FileBlobStore, StoredBlob
from aiaas.store.db import Database
from aiaas.store.models import Organization

log = logging.getLogger(__name__)

_BLOB_AAD = b"aiaas/blob/v1\x00"
SHM = Path("/dev/shm")
PLAIN_PREFIX = "aiaas-plain-"


class EncryptedBlobError(RuntimeError):
    """A caller asked for the raw path of an encrypted blob (use `open_local`)."""


def blob_aad(key: str) -> bytes:
    return _BLOB_AAD + key.encode("utf-8")


def org_of(key: str) -> str:
    org, sep, rest = key.partition("/")
    if not org or not sep or not rest:
        raise ValueError(f"blob key {key!r} does not start with an organisation id")
    return org


def is_encrypted(path: Path) -> bool:
    """True when the file starts with the encrypted-file header."""
    with open(path, "rb") as fh:
        return fh.read(len(crypto.MAGIC)) == crypto.MAGIC


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _plain_bases() -> list[Path]:
    """Where private plaintext directories go: /dev/shm when usable, else the temp directory."""
    if SHM.is_dir() and os.access(SHM, os.W_OK | os.X_OK):
        return [SHM, Path(tempfile.gettempdir())]
    return [Path(tempfile.gettempdir())]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]


def _owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_time(pid) or 0}"


def _alive(tag: str) -> bool:
    pid_text, _, start = tag.partition(".")
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    current = _start_time(pid)
    return current is None or start in ("0", current)


@contextlib.contextmanager
def private_tempdir() -> Iterator[Path]:
    """A directory only this user can read, in memory when /dev/shm is there; removed afterwards.

    The name says which process owns it (`aiaas-plain-<pid>.<start time>-…`)."""
    base = _plain_bases()[0]
    path = Path(tempfile.mkdtemp(prefix=f"{PLAIN_PREFIX}{_owner_tag()}-", dir=base))  # mkdtemp: mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale_plaintext(bases: list[Path] | None = None) -> list[Path]:
    """Remove private plaintext directories whose owning process is gone (killed mid-read); returns them.

    Only this user's directories named by `private_tempdir()` are considered, and a directory whose
    process is alive (same pid and start time) is left alone."""
    removed: list[Path] = []
    uid = os.getuid()
    for base in bases or _plain_bases():
        for path in base.glob(f"{PLAIN_PREFIX}*"):
            tag = path.name[len(PLAIN_PREFIX):].split("-", 1)[0]
            if not tag.partition(".")[0].isdigit():
                continue  # not named by us (or by a version before owner tags): leave it
            try:
                if path.lstat().st_uid != uid or not path.is_dir() or _alive(tag):
                    continue
            except OSError:
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.warning("removed plaintext left by a dead process: %s", path)
    return removed


class Keyring:
    """Per-organisation data keys: created on first use, unwrapped once per process.

    The unwrapped key is cached, but every use first checks (one primary-key read) that the
    organisation still holds a wrapped key: another process deleting the organisation makes
    the key unusable here at once, not when this process restarts.
    """

    def __init__(self, db: Database, master_secret: str) -> None:
        self._db = db
        self._kek = crypto.derive_kek(master_secret)
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def data_key(self, org_id: str, *, create: bool = False) -> bytes:
        wrapped = self._load(org_id, create=create)  # raises DecryptionError once the organisation is gone
        with self._lock:
            cached = self._keys.get(org_id)
        if cached is not None:
            return cached
        key = crypto.unwrap_key(self._kek, wrapped, org_id=org_id)
        with self._lock:
            self._keys[org_id] = key
        return key

    def _load(self, org_id: str, *, create: bool) -> bytes:
        with self._db.session() as s:
            exists, wrapped = s.execute(
                select(Organization.id, Organization.wrapped_data_key).where(Organization.id == org_id)
            ).one_or_none() or (None, None)
            if exists is None:
                self.forget(org_id)
                raise crypto.DecryptionError(f"No data key: organization {org_id} does not exist (deleted?).")
            if wrapped is not None or not create:
                if wrapped is None:
                    self.forget(org_id)
                    raise crypto.DecryptionError(f"Organization {org_id} has no data key yet.")
                return wrapped
            candidate = crypto.wrap_key(self._kek, crypto.new_data_key(), org_id=org_id)
            # Only the first writer wins; a concurrent creator re-reads the winner below.
            s.execute(
                update(Organization)
                .where(Organization.id == org_id, Organization.wrapped_data_key.is_(None))
                .values(wrapped_data_key=candidate)
            )
        with self._db.session() as s:
            wrapped = s.scalar(select(Organization.wrapped_data_key).where(Organization.id == org_id))
        if wrapped is None:
            raise crypto.DecryptionError(f"Organization {org_id} was deleted while its data key was created.")
        log.info("created the data key of organization %s", org_id)
        return wrapped

    def forget(self, org_id: str) -> None:
        """Drop the cached key (its organisation was deleted)."""
        with self._lock:
            self._keys.pop(org_id, None)


class _MeteredReader:
    """Counts and hashes the plaintext as it is read, and enforces the size limit."""

    def __init__(self, src: BinaryIO, max_bytes: int | None) -> None:
        self.src = src
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.src.read(n)
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise PayloadTooLarge(f"File is larger than the upload limit of {self.max_bytes} bytes.")
        self.digest.update(chunk)
        return chunk


class EncryptedBlobStore(BlobStore):
    """Encrypts on the way in, decrypts into private temporary copies on the way out."""

    def __init__(self, inner: BlobStore, keyring: Keyring, *,
                 chunk_size: int = crypto.DEFAULT_CHUNK_SIZE) -> None:
        self.inner = inner
        self.keyring = keyring
        self.chunk_size = chunk_size

    # ---- writes ----------------------------------------------------------------------------
    def put(self, key: str, src: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob:
        data_key = self.keyring.data_key(org_of(key), create=True)
        reader = _MeteredReader(src, max_bytes)
        # Encrypted frame by frame as the inner store reads: no copy, plaintext or ciphertext, anywhere else.
        with ChunkReader(crypto.encrypt_stream(reader, data_key, aad=blob_aad(key),
                                               chunk_size=self.chunk_size)) as sealed:
            if isinstance(self.inner, FileBlobStore):  # its digest of the ciphertext would go unused
                stored = self.inner.put(key, cast(BinaryIO, sealed), digest=False)
            else:
                stored = self.inner.put(key, cast(BinaryIO, sealed))
        # Callers record the plaintext's size and digest; the ciphertext's are the store's business.
        return StoredBlob(uri=stored.uri, size=reader.size, sha256=reader.digest.hexdigest())

    def put_dir(self, key: str, src: Path) -> str:
        data_key = self.keyring.data_key(org_of(key), create=True)
        src = Path(src)
        with tempfile.TemporaryDirectory(prefix="aiaas-enc-") as tmp:
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src).as_posix()
                dest = Path(tmp) / rel
                if path.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "rb") as fin, open(dest, "wb") as fout:
                    crypto.encrypt_file(fin, fout, data_key, aad=blob_aad(f"{key}/{rel}"),
                                        chunk_size=self.chunk_size)
            return self.inner.put_dir(key, Path(tmp))

    def delete(self, uri: str) -> None:
        self.inner.delete(uri)

    def key_of(self, uri: str) -> str:
        return self.inner.key_of(uri)

    # ---- reads ---------------------------------------------------------------------------
    def local_path(self, uri: str) -> Path:
        """Never the stored bytes' path: they are ciphertext (use `open_local`), or refused plaintext."""
        path = self.inner.local_path(uri)
        files = [path] if path.is_file() else _files(path) if path.is_dir() else []
        if files:
            self._refuse_plaintext(uri, files)
            raise EncryptedBlobError(f"{uri} is encrypted at rest: read it with `blobs.open_local(uri)`.")
        return path

    @contextlib.contextmanager
    def open_local(self, uri: str) -> Iterator[Path]:
        path = self.inner.local_path(uri)
        if path.is_file():
            self._refuse_plaintext(uri, [path])
            key = self.inner.key_of(uri)
            data_key = self.keyring.data_key(org_of(key))
            with private_tempdir() as tmp:
                out = tmp / path.name
                self._decrypt(path, out, data_key, key, uri)
                yield out
        elif path.is_dir():
            self._refuse_plaintext(uri, _files(path))
            key = self.inner.key_of(uri)
            data_key = self.keyring.data_key(org_of(key))
            with private_tempdir() as tmp:
                root = tmp / path.name
                root.mkdir()
                for sub in sorted(path.rglob("*")):
                    rel = sub.relative_to(path).as_posix()
                    if sub.is_dir():
                        (root / rel).mkdir(parents=True, exist_ok=True)
                    else:
                        self._decrypt(sub, root / rel, data_key, f"{key}/{rel}", uri)
                yield root
        else:  # nothing there: the caller finds the path missing, as with a plain store
            yield path

    def read_stream(self, uri: str) -> Iterator[bytes]:
        """Stream the plaintext frame by frame, with no temporary copy.

        A plaintext blob or an unusable data key raises here, at the call, before a response that
        streams the result has started; a frame that fails authentication raises while iterating."""
        path = self.inner.local_path(uri)
        self._refuse_plaintext(uri, [path])
        key = self.inner.key_of(uri)
        data_key = self.keyring.data_key(org_of(key))
        return self._frames(uri, path, data_key, key)

    @staticmethod
    def _frames(uri: str, path: Path, data_key: bytes, key: str) -> Iterator[bytes]:
        try:
            yield from crypto.open_decrypted(path, data_key, aad=blob_aad(key))
        except crypto.DecryptionError:
            log.error("blob %s failed to decrypt", uri)
            raise

    @staticmethod
    def _refuse_plaintext(uri: str, files: list[Path]) -> None:
        plain = [p for p in files if not is_encrypted(p)]
        if plain:
            log.error("blob %s holds %d file(s) without the encryption header, e.g. %s", uri, len(plain), plain[0])
            raise UnencryptedBlob(
                f"Blob {uri} is not encrypted ({plain[0].name} has no encryption header) and is refused; "
                "if it predates encryption at rest, run `aiaas secrets migrate-blobs` on the server host."
            )

    @staticmethod
    def _decrypt(src: Path, dest: Path, data_key: bytes, key: str, uri: str) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            try:
                crypto.decrypt_file(fin, fout, data_key, aad=blob_aad(key))
            except crypto.DecryptionError:
                log.error("blob %s (%s) failed to decrypt", uri, key)
                raise

    def __repr__(self) -> str:
        return f"EncryptedBlobStore({self.inner!r})"


def encrypted(blobs: BlobStore, db: Database, master_secret: str) -> EncryptedBlobStore:
    """`blobs` encrypting with the organisations' data keys (returned as is when it already does)."""
    if isinstance(blobs, EncryptedBlobStore):
        return blobs
    return EncryptedBlobStore(blobs, Keyring(db, master_secret))
