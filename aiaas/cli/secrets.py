"""`aiaas secrets`: master secret rotation and encryption of blobs stored before encryption (server host)."""

from __future__ import annotations

from pathlib import Path

import typer

from aiaas.cli.common import DataDirOpt, DbOpt, apply_env, console, handle_errors

secrets_app = typer.Typer(help="Encryption at rest: the master secret and stored blobs (run on the server host).",
                          no_args_is_help=True)


@secrets_app.command("rotate")
@handle_errors
def rotate(data_dir: Path = DataDirOpt, database_url: str = DbOpt) -> None:
    """Re-wrap every organisation's data key under a new master secret, in one transaction.

    The new secret replaces secret.key (0600) only after the transaction committed; the old one is
    kept as secret.key.bak-<time> (0600) for database backups taken before the rotation. Restart
    every aiaas process (serve, worker) afterwards: they read the secret when they start."""
    from aiaas.cli.admin import operator_database
    from aiaas.store.rekey import rotate_master_secret

    apply_env(data_dir, database_url)
    with operator_database() as (settings, db):
        done = rotate_master_secret(settings, db)
    if done.recovered:
        console.print(f"completed an interrupted rotation: {done.secret_file} holds the new secret")
    else:
        console.print(f"re-wrapped {done.rewrapped} data keys (created {done.created}) under a new master "
                      f"secret in {done.secret_file} (mode 0600)")
    console.print(f"the old secret is in {done.backup_file} (mode 0600): keep it while database backups "
                  "from before the rotation matter, then delete it")
    console.print("restart every aiaas serve / worker process now: they read the secret at start")


@secrets_app.command("migrate-blobs")
@handle_errors
def migrate_blobs(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the plaintext files."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbOpt,
) -> None:
    """Encrypt, in place, uploaded files and model artifacts stored before encryption at rest.

    Blobs without the encryption header are refused when read (error code unencrypted_blob); this
    encrypts each under its organisation's data key. Safe to run again: encrypted files are skipped."""
    from aiaas.cli.admin import operator_database
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from aiaas.store.rekey import migrate_plaintext_blobs

    apply_env(data_dir, database_url)
    with operator_database() as (settings, db):
        store = encrypted(create_blob_store(settings.blobs_url, settings), db, settings.master_secret())
        report = migrate_plaintext_blobs(db, store, dry_run=dry_run)
    for key in report.encrypted_files:
        console.print(f"{'plaintext' if dry_run else 'encrypted'}: {key}")
    for uri in report.missing:
        console.print(f"missing (nothing stored): {uri}")
    verb = "would encrypt" if dry_run else "encrypted"
    console.print(f"{report.blobs} blobs checked, {verb} {len(report.encrypted_files)} plaintext files")
