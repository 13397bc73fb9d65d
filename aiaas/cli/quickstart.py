"""`aiaas quickstart`: the main job on one machine, start to finish."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from aiaas.cli.common import console, err_console, handle_errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, job_workers: int) -> subprocess.Popen:
    from aiaas.jobs.lifetime import child_env

    # The server ends with us whatever ends us (its own session keeps a terminal's Ctrl-C for us to
    # handle; AIAAS_PARENT_PID arms its parent-death signal for a SIGKILL), and its workers with it.
    env = child_env(os.environ | {"AIAAS_DATA_DIR": str(data_dir)})
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiaas.cli.main", "serve", "--port", str(port), "--job-workers", str(job_workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err_console.print(f"server exited; see {data_dir / 'server.log'}")
                raise typer.Exit(1)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.2)
        raise typer.Exit(1)
    except BaseException:  # not ready in time, or interrupted while waiting: leave nothing behind
        stop_server(proc)
        raise


def ensure_initialised(data_dir: Path) -> str:
    """Initialise the data dir if needed and return an admin key (kept in the data dir for the demo)."""
    from aiaas.core.settings import Settings, write_secret
    from aiaas.store import migrate, tenancy
    from aiaas.store.db import Database

    key_file = data_dir / "quickstart.key"
    settings = Settings(data_dir=data_dir, database_url=os.environ.get("AIAAS_DATABASE_URL"))
    write_secret(settings)
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)  # every run: the server it starts refuses an out-of-date schema in production
    if key_file.exists():
        db.dispose()
        return key_file.read_text().strip()
    with db.session() as s:
        _org, _row, key = tenancy.create_organization(s, "quickstart")
    db.dispose()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


DEMO_EXAMPLES = [
    "I was billed twice for the same month",
    "my parcel still hasn't arrived after two weeks",
    "please close my account and stop the monthly plan",
    "the app freezes every time I open the camera",
    "I forgot my password and the reset link never comes",
    "I would like my money back for the broken headphones",
]


@handle_errors
def quickstart(
    data: Path = typer.Argument(None, help="Labelled CSV/JSONL/Parquet (default: the bundled demo dataset)."),
    model: str = typer.Option("minilm-l6", "--model", help="Base model to fine-tune."),
    text_column: str = typer.Option("text", "--text-column"),
    label_column: str = typer.Option("label", "--label-column"),
    data_dir: Path = typer.Option(Path.home() / ".aiaas", "--data-dir", envvar="AIAAS_DATA_DIR"),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the server running at the end."),
) -> None:
    """The main job: initialise, start the server, upload, fine-tune with live progress, deploy, predict."""
    from aiaas.cli.samples import sample_texts
    from aiaas.cli.workflow import follow_job
    from aiaas.data import demo_dataset_path
    from aiaas.jobs.lifetime import die_with_parent
    from aiaas.sdk import Client

    die_with_parent()  # `make demo` names itself our parent: a killed make ends us too
    # SIGTERM (e.g. from make, or a service manager) unwinds like Ctrl-C, so the server is stopped below.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    t0 = time.monotonic()
    data_path = (data or demo_dataset_path()).resolve()
    # Read before training, so a wrong --text-column fails now rather than after minutes of fine-tuning.
    texts = DEMO_EXAMPLES if data is None else sample_texts(data_path, text_column)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = ensure_initialised(data_dir)
    port = _free_port()
    console.rule("aiaas quickstart")
    console.print(f"data directory  {data_dir}")
    console.print(f"training data   {data_path}")
    proc = start_server(data_dir, port, job_workers=1)
    base = f"http://127.0.0.1:{port}"
    console.print(f"server          {base} (pid {proc.pid}, 1 training worker)")
    console.print(f"web console     {base}/ui  (sign in with the key in {data_dir / 'quickstart.key'})")
    try:
        with Client(base, key) as c:
            f = c.files.create(data_path)
            summary = f.get("summary") or {}
            console.print(f"uploaded        {f['id']}: {summary.get('rows')} rows, columns {summary.get('columns')}")
            job = c.fine_tuning.jobs.create(model=model, training_file=f["id"], suffix="quickstart", seed=42,
                                            text_column=text_column, label_column=label_column)
            console.print(f"fine-tuning     {job['id']} from {model}")
            job = follow_job(c, job["id"])
            if job["status"] != "succeeded":
                err = job.get("error") or {}
                console.print(f"[red]job {job['status']}[/red]: {err.get('message')}")
                raise typer.Exit(1)
            _print_report(job)
            name = "quickstart"
            try:
                c.deployments.delete(name)
            except Exception:  # noqa: BLE001 - first run: nothing to replace
                pass
            c.deployments.create(name, model=job["fine_tuned_model"], min_replicas=1)
            console.print(f"deployed        {name} -> {job['fine_tuned_model']}")
            out = c.deployments.predict(name, texts)
            console.rule("predictions")
            for row, text in zip(out["data"], texts, strict=False):
                shown = row.get("label") or row.get("labels") or row.get("value")
                score = f"{row['score']:.2f}" if "score" in row else ""
                console.print(f"{str(shown):22} {score:>5}  {text}")
        console.rule("call it yourself")
        if keep_running:
            console.print(f"the server is still running at {base} (pid {proc.pid})")
        else:
            # This command stops its server when it ends; the deployment stays in the data dir.
            base = "http://127.0.0.1:8000"
            console.print(f"the server has stopped; deployment '{name}' stays in {data_dir}. Start it again with:")
            console.print(f"  aiaas serve --data-dir {data_dir} --port 8000", soft_wrap=True)
        console.print(f"export AIAAS_API_KEY=$(cat {data_dir / 'quickstart.key'})", soft_wrap=True)
        console.print(
            f"curl -s {base}/v1/deployments/{name}/predict -H \"Authorization: Bearer $AIAAS_API_KEY\" "
            '-H "Content-Type: application/json" -d \'{"inputs": ["where is my order?"]}\'',
            soft_wrap=True,  # commands to copy: never wrapped at the terminal's width
        )
        console.print(
            f"python -c \"from aiaas.sdk import Client; import os; "
            f"print(Client('{base}', os.environ['AIAAS_API_KEY']).deployments.predict('{name}', ['where is my order?']))\"",
            soft_wrap=True,
        )
        console.print(f"web console: {base}/ui (sign in with the key above)")
        console.print(f"\ndone in {time.monotonic() - t0:.0f} s")
    finally:
        if not keep_running:
            stop_server(proc)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (the server stops its workers), then SIGKILL to the whole group if it is not gone in time."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is the server and its workers
        proc.wait()


def _print_report(job: dict) -> None:
    report = job.get("data_report") or {}
    metrics = job.get("metrics") or {}
    counts = (report.get("label_counts") or {}).get("validation") or {}
    majority = max(counts.values()) / sum(counts.values()) if counts else None
    dropped = {k: v for k, v in (report.get("rows_dropped") or {}).items() if v}
    console.rule("result")
    console.print(f"rows read {report.get('rows_read')}, dropped {dropped or 'none'}, "
                  f"train {report.get('n_train')}, validation {report.get('n_validation')}")
    hp = job.get("hyperparameters") or {}
    console.print("hyperparameters " + ", ".join(f"{k}={v}" for k, v in hp.items() if not isinstance(v, dict)))
    if "accuracy" in metrics:
        line = f"validation accuracy [bold]{metrics['accuracy']:.3f}[/bold]"
        if "macro_f1" in metrics:
            line += f", macro-F1 {metrics['macro_f1']:.3f}"
        if majority is not None:
            line += f" (majority class: {majority:.3f})"
        console.print(line)
    console.print(f"model           {job['fine_tuned_model']}")


