"""Operator-side key maintenance: rotate the master secret, encrypt blobs stored before encryption.

Rotation re-wraps every organisation's data key (the blobs themselves do not change), in
one transaction, and only then puts the new secret in place, so at every moment the
secret file on disk opens every wrapped key in the database:

1. the new secret is written to `secret.key.new` (0600) and flushed to disk;
2. one transaction re-wraps every data key under it (and creates the missing ones, so no
   process still holding the old secret can create a key under it afterwards); any key
   that does not unwrap with the current secret aborts the whole transaction;
3. the old secret is copied to `secret.key.bak-<UTC time>` (0600): database backups made
   before the rotation still need it; then `secret.key.new` replaces `secret.key`.

A crash between 2 and 3 leaves `secret.key.new` holding the live secret; the next
`rotate` finds it, sees that it opens the keys, and completes the swap first.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update

from aiaas.core.errors import ConfigurationError
from aiaas.core.settings import Settings
from aiaas.security import crypto
from aiaas.store.db import Database, rows_changed
from aiaas.store.encrypted import EncryptedBlobStore, blob_aad, is_encrypted, org_of
from aiaas.store.models import File, Model, Organization

log = logging.getLogger(__name__)


# ---- master secret rotation ---------------------------------------------------------------


@dataclass
class Rotation:
    rewrapped: int
    created: int
    secret_file: Path
    backup_file: Path
    recovered: bool = False


def rewrap_all(db: Database, old_secret: str, new_secret: str) -> tuple[int, int]:
    """Re-wrap every organisation's data key under `new_secret`, in one transaction.

    Returns (re-wrapped, created). Raises DecryptionError, changing nothing, when a key does
    not unwrap with `old_secret`."""
    old_kek, new_kek = crypto.derive_kek(old_secret), crypto.derive_kek(new_secret)
    rewrapped = created = 0
    with db.session() as s:
        rows = s.execute(select(Organization.id, Organization.wrapped_data_key).with_for_update()).all()
        for org_id, wrapped in rows:
            if wrapped is None:  # created now, under the new secret, rather than later under the old one
                data_key, created = crypto.new_data_key(), created + 1
            else:
                try:
                    data_key = crypto.unwrap_key(old_kek, wrapped, org_id=org_id)
                except crypto.DecryptionError:
                    raise crypto.DecryptionError(
                        f"The data key of organization {org_id} does not unwrap with the current master "
                        "secret; nothing was changed."
                    ) from None
                rewrapped += 1
            result = s.execute(
                update(Organization)
                .where(Organization.id == org_id, _same(Organization.wrapped_data_key, wrapped))
                .values(wrapped_data_key=crypto.wrap_key(new_kek, data_key, org_id=org_id))
            )
            if rows_changed(result) != 1:
                raise crypto.DecryptionError(
                    f"The data key of organization {org_id} changed during the rotation; nothing was changed, "
                    "run it again.")
    return rewrapped, created


def _same(column: Any, value: bytes | None) -> Any:
    return column.is_(None) if value is None else column == value


def _opens_all(db: Database, secret: str) -> bool:
    kek = crypto.derive_kek(secret)
    with db.session() as s:
        rows = s.execute(select(Organization.id, Organization.wrapped_data_key)
                         .where(Organization.wrapped_data_key.is_not(None))).all()
    try:
        for org_id, wrapped in rows:
            if wrapped is not None:
                crypto.unwrap_key(kek, wrapped, org_id=org_id)
    except crypto.DecryptionError:
        return False
    return True


def _write_private(path: Path, text: str) -> None:
    """Write `path` mode 0600 (never existing before) and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(secret_file: Path, pending: Path) -> Path:
    """Back up the current secret (0600), then move the pending one into place."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup = secret_file.with_name(f"{secret_file.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        backup = secret_file.with_name(f"{secret_file.name}.bak-{stamp}-{n}")
        n += 1
    _write_private(backup, secret_file.read_text())
    os.replace(pending, secret_file)
    _fsync_dir(secret_file.parent)
    return backup


def rotate_master_secret(settings: Settings, db: Database) -> Rotation:
    """Rotate the secret in `settings.secret_file` (see the module docstring for the order of steps)."""
    if settings.secret_key is not None:
        raise ConfigurationError(
            "The master secret comes from AIAAS_SECRET_KEY, which this command cannot change: unset it to "
            f"use {settings.secret_file}, or re-wrap by hand.", param="secret_key")
    secret_file = settings.secret_file
    if not secret_file.exists():
        raise ConfigurationError(f"No master secret file at {secret_file}; run `aiaas init` first.")
    old = settings.master_secret()  # also refuses a group/other-readable file in production
    pending = secret_file.with_name(secret_file.name + ".new")
    if pending.exists():
        leftover = pending.read_text().strip()
        if _opens_all(db, leftover) and not _opens_all(db, old):
            # An earlier rotation committed and stopped before the swap: finish it.
            backup = _swap(secret_file, pending)
            log.warning("completed an interrupted rotation: %s is now the master secret", secret_file)
            return Rotation(0, 0, secret_file, backup, recovered=True)
        pending.unlink()  # an earlier rotation that never committed
    new = secrets.token_urlsafe(48)
    _write_private(pending, new + "\n")
    try:
        rewrapped, created = rewrap_all(db, old, new)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    backup = _swap(secret_file, pending)
    return Rotation(rewrapped, created, secret_file, backup)


# ---- plaintext blobs ----------------------------------------------------------------------


@dataclass
class Migration:
    blobs: int = 0  # blobs looked at
    encrypted_files: list[str] = field(default_factory=list)  # files encrypted now (blob keys)
    missing: list[str] = field(default_factory=list)  # URIs with nothing stored


def migrate_plaintext_blobs(db: Database, store: EncryptedBlobStore, *, dry_run: bool = False) -> Migration:
    """Encrypt in place every stored file (uploads, model artifacts) that has no encryption header.

    Each file is encrypted under its organisation's data key and bound to its own blob key,
    exactly as `put`/`put_dir` would have written it, and replaces the plaintext atomically
    (written aside, then renamed by the store). Files already encrypted are left alone, so
    the command can be run again after an interruption."""
    with db.session() as s:
        uris = list(s.scalars(select(File.storage_uri))) + list(s.scalars(select(Model.artifact_uri)))
    report = Migration()
    inner = store.inner
    for uri in uris:
        report.blobs += 1
        path = inner.local_path(uri)
        key = inner.key_of(uri)
        if path.is_file():
            files = [(path, key)]
        elif path.is_dir():
            files = [(p, f"{key}/{p.relative_to(path).as_posix()}") for p in sorted(path.rglob("*")) if p.is_file()]
        else:
            report.missing.append(uri)
            continue
        for file_path, file_key in files:
            if is_encrypted(file_path):
                continue
            report.encrypted_files.append(file_key)
            if dry_run:
                continue
            data_key = store.keyring.data_key(org_of(file_key), create=True)
            with open(file_path, "rb") as src, tempfile.TemporaryFile(prefix="aiaas-enc-") as sealed:
                crypto.encrypt_file(src, sealed, data_key, aad=blob_aad(file_key), chunk_size=store.chunk_size)
                sealed.seek(0)
                inner.put(file_key, sealed)
            log.info("encrypted plaintext blob %s", file_key)
    return report
