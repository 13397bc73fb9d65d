"""`aiaas batch create|wait|download`: score a CSV (or run a JSONL of requests) through the Batch API.

    aiaas batch create scores.csv --deployment support --text-column body
    aiaas batch wait batch-...
    aiaas batch download batch-... -o out.csv
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aiaas.cli.common import (
    EXIT_JOB_CANCELLED,
    EXIT_JOB_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ApiKeyOpt,
    BaseUrlOpt,
    JsonOpt,
    console,
    err_console,
    handle_errors,
    print_json,
    sdk_client,
)
from aiaas.sdk.client import Client
from aiaas.sdk.resources import Request

batch_app = typer.Typer(help="Batches: score a file with a model in the workers.", no_args_is_help=True)
TERMINAL = ("completed", "failed", "expired", "cancelled")
POLL_S = 1.0


def _retrieve(c: Client, batch_id: str) -> dict[str, Any]:
    got: dict[str, Any] = c.call(Request("GET", f"/v1/batches/{batch_id}"))
    return got


def _wait(c: Client, batch: dict[str, Any], timeout: float | None, quiet: bool) -> dict[str, Any]:
    """Poll until the batch ends, with a progress bar of the lines answered."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=quiet, transient=False) as bar:
        task = bar.add_task(batch["id"], total=None)
        while batch["status"] not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                err_console.print(f"batch {batch['id']} is still {batch['status']}")
                raise typer.Exit(EXIT_TIMEOUT)
            time.sleep(POLL_S)
            batch = _retrieve(c, batch["id"])
            progress = batch.get("progress") or {}
            bar.update(task, completed=progress.get("answered", 0), total=progress.get("total") or None,
                       description=f"{batch['id']} {batch['status']}")
    return batch


def _end(batch: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(batch)
    else:
        counts = batch["request_counts"]
        console.print(f"batch [bold]{batch['id']}[/bold] {batch['status']}: {counts['completed']} answered, "
                      f"{counts['failed']} failed of {counts['total']}; output {batch['output_file_id']}"
                      + (f", errors {batch['error_file_id']}" if batch.get("error_file_id") else ""))
    if batch["status"] == "cancelled":
        raise typer.Exit(EXIT_JOB_CANCELLED)
    if batch["status"] in ("failed", "expired"):
        raise typer.Exit(EXIT_JOB_FAILED)


@batch_app.command("create")
@handle_errors
def create(path: Path = typer.Argument(..., exists=True, dir_okay=False,
                                       help="CSV or Parquet to score, or JSONL of requests."),
           deployment: str = typer.Option(None, "--deployment", help="Score with this deployment."),
           model: str = typer.Option(None, "--model", help="Or with this model id."),
           text_column: str = typer.Option(None, "--text-column", help="The CSV/Parquet column to score."),
           endpoint: str = typer.Option(None, "--endpoint",
                                        help="JSONL: the endpoint its lines call (default /v1/classifications)."),
           top_k: int = typer.Option(3, "--top-k", min=1, max=20, help="Top labels added per row."),
           wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the batch, with a progress bar."),
           timeout: float = typer.Option(None, "--timeout", help="Seconds to wait at most."),
           as_json: bool = JsonOpt, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Upload a file and create a batch over it; by default wait until it ends."""
    table = path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq")
    if table and not text_column:
        err_console.print("[red]error[/red] a CSV or Parquet file needs --text-column")
        raise typer.Exit(EXIT_USAGE)
    if table and not (deployment or model):
        err_console.print("[red]error[/red] name the model: --deployment NAME or --model ID")
        raise typer.Exit(EXIT_USAGE)
    body: dict[str, Any] = {"endpoint": endpoint or (f"/v1/deployments/{deployment}/predict" if deployment
                                                     else "/v1/classifications"),
                            "completion_window": "24h"}
    if table:
        body |= {"text_column": text_column, "top_k": top_k} | ({"model": model} if model and not deployment
                                                                else {})
    with sdk_client(base_url, api_key) as c:
        f = c.files.create(path, purpose="batch")
        batch: dict[str, Any] = c.call(Request("POST", "/v1/batches", json=body | {"input_file_id": f.id},
                                               idempotent=False))
        if not as_json:
            console.print(f"uploaded {path.name} as {f.id}; batch [bold]{batch['id']}[/bold] {batch['status']}")
        if not wait:
            if as_json:
                print_json(batch)
            return
        _end(_wait(c, batch, timeout, as_json), as_json)


@batch_app.command("wait")
@handle_errors
def wait_cmd(batch_id: str = typer.Argument(...), timeout: float = typer.Option(None, "--timeout"),
             as_json: bool = JsonOpt, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Wait for a batch to end (exit 3 failed/expired, 4 cancelled, 5 timeout)."""
    with sdk_client(base_url, api_key) as c:
        _end(_wait(c, _retrieve(c, batch_id), timeout, as_json), as_json)


@batch_app.command("download")
@handle_errors
def download(batch_id: str = typer.Argument(...),
             output: Path = typer.Option(..., "-o", "--output", help="Where to write the output file."),
             errors: bool = typer.Option(False, "--errors", help="Download the error file instead."),
             base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Download a finished batch's output (a scored CSV, or OpenAI's JSONL lines)."""
    with sdk_client(base_url, api_key) as c:
        batch = _retrieve(c, batch_id)
        file_id = batch.get("error_file_id" if errors else "output_file_id")
        if not file_id:
            err_console.print(f"[red]error[/red] batch {batch_id} ({batch['status']}) has no "
                              f"{'error' if errors else 'output'} file")
            raise typer.Exit(EXIT_JOB_FAILED)
        data = c.files.content(file_id)
    output.write_bytes(data)
    console.print(f"wrote {len(data)} bytes to {output}")
