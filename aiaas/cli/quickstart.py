"""`aiaas quickstart`: the main job on one machine, start to finish."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from aiaas.cli.common import console, handle_errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, job_workers: int) -> subprocess.Popen:
    env = os.environ | {"AIAAS_DATA_DIR": str(data_dir)}
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiaas.cli.main", "serve", "--port", str(port), "--job-workers", str(job_workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise typer.Exit(f"server exited; see {data_dir / 'server.log'}")  # type: ignore[arg-type]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise typer.Exit(1)


def ensure_initialised(data_dir: Path) -> str:
    """Initialise the data dir if needed and return an admin key (kept in the data dir for the demo)."""
    from aiaas.core.settings import Settings, write_secret
    from aiaas.store import migrate, tenancy
    from aiaas.store.db import Database

    key_file = data_dir / "quickstart.key"
    if key_file.exists():
        return key_file.read_text().strip()
    settings = Settings(data_dir=data_dir, database_url=os.environ.get("AIAAS_DATABASE_URL"))
    write_secret(settings)
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    with db.session() as s:
        _org, _row, key = tenancy.create_organization(s, f"quickstart-{int(time.time())}")
    db.dispose()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


@handle_errors
def quickstart(
    data: Path = typer.Argument(None, help="Labelled CSV/JSONL/Parquet (default: the bundled demo dataset)."),
    data_dir: Path = typer.Option(Path(".aiaas"), "--data-dir", envvar="AIAAS_DATA_DIR"),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the server running at the end."),
) -> None:
    """Initialise, start the server, and exercise the API through the SDK."""
    from aiaas.sdk import Client

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = ensure_initialised(data_dir)
    port = _free_port()
    console.rule("aiaas quickstart")
    console.print(f"data directory {data_dir}")
    proc = start_server(data_dir, port, job_workers=1)
    base = f"http://127.0.0.1:{port}"
    console.print(f"server ready at {base} (pid {proc.pid})")
    try:
        with Client(base, key) as c:
            me = c.organizations.me()
            console.print(f"organisation {me['name']} ({me['id']})")
            made = c.api_keys.create("quickstart-infer", scopes=["infer"])
            console.print(f"created an inference key {made['id']} ({made['prefix']}…)")
            console.print(f"keys in this organisation: {len(list(c.api_keys.list()))}")
        console.print(f'\ncurl -H "Authorization: Bearer $AIAAS_API_KEY" {base}/v1/organizations/me')
    finally:
        if not keep_running:
            proc.terminate()
            proc.wait(timeout=30)
