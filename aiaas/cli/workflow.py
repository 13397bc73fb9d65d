"""`aiaas files|jobs|models|predict`: the main job from the command line, through the SDK.

Every command that prints objects takes `--json` (the API's objects) and `-q/--quiet` (ids only, one per
line); `aiaas deployments` is in deployments.py.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from aiaas.cli.common import (
    EXIT_JOB_CANCELLED,
    EXIT_JOB_FAILED,
    EXIT_TIMEOUT,
    ApiKeyOpt,
    BaseUrlOpt,
    JsonOpt,
    QuietOpt,
    check_output_flags,
    console,
    err_console,
    handle_errors,
    print_ids,
    print_json,
    sdk_client,
)
from aiaas.protocol.files import PII_POLICIES
from aiaas.protocol.tasks import DEFAULT_TASK

files_app = typer.Typer(help="Training files.", no_args_is_help=True)
jobs_app = typer.Typer(help="Fine-tuning jobs.", no_args_is_help=True)
models_app = typer.Typer(help="Base and fine-tuned models.", no_args_is_help=True)
PiiPolicyChoice = enum.Enum("PiiPolicyChoice", {p: p for p in PII_POLICIES}, type=str)  # --pii-policy values
PII_ALLOW = PiiPolicyChoice("allow")  # the server's default


@files_app.command("upload")
@handle_errors
def files_upload(path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, JSONL or Parquet."),
                 pii_policy: PiiPolicyChoice = typer.Option(
                     PII_ALLOW, "--pii-policy", case_sensitive=False,
                     help="Personal data found in the file: allow (store as is), redact (store it with "
                          "placeholders such as [EMAIL]) or reject (refuse the upload)."),
                 as_json: bool = JsonOpt, quiet: bool = QuietOpt,
                 base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Upload a labelled file for fine-tuning; prints its id and what the PII scan found."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        f = c.files.create(path, pii_policy=pii_policy.value)
    if as_json or quiet:
        print_json(f) if as_json else print_ids([f.id])
        return
    s = f.get("summary") or {}
    console.print(f"uploaded {f['filename']} as [bold]{f['id']}[/bold]: {f['bytes']} bytes, {s.get('rows')} rows, "
                  f"columns {s.get('columns')}")
    pii = s.get("pii") or {}
    found = {kind: n for kind, n in (pii.get("counts") or {}).items() if n}
    if found:
        what = ", ".join(f"{kind} {n}" for kind, n in found.items())
        done = f"redacted {pii.get('redacted', 0)} values" if pii.get("redacted") else "stored as uploaded"
        console.print(f"PII ({pii.get('policy')}): {what} in {pii.get('rows_with_pii')} rows; {done}")


@files_app.command("list")
@handle_errors
def files_list(as_json: bool = JsonOpt, quiet: bool = QuietOpt,
               base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List uploaded files."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        files = list(c.files.list())
    if as_json or quiet:
        print_json(files) if as_json else print_ids(f.id for f in files)
        return
    table = Table("id", "filename", "purpose", "bytes", "rows")
    for f in files:
        table.add_row(f.id, f.filename, f.purpose, str(f.bytes), str((f.summary or {}).get("rows")))
    console.print(table)


@jobs_app.command("create")
@handle_errors
def jobs_create(
    training_file: str = typer.Argument(..., help="File id from `aiaas files upload`."),
    model: str = typer.Option(
        "minilm-l6", "--model",
        help="Base model id, or a model family: tfidf-linear, auto, auto:<base model> (see `aiaas models list`).",
    ),
    validation_file: str = typer.Option(None, "--validation-file"),
    suffix: str = typer.Option(None, "--suffix"),
    registered_model: str = typer.Option(
        None, "--registered-model", help="Registered model its model becomes a version of (default: from --suffix)."),
    epochs: str = typer.Option("auto", "--epochs"),
    batch_size: str = typer.Option("auto", "--batch-size"),
    lr_multiplier: str = typer.Option("auto", "--lr-multiplier"),
    text_column: str = typer.Option("text", "--text-column"),
    label_column: str = typer.Option("label", "--label-column"),
    task: str = typer.Option(DEFAULT_TASK, "--task"),
    seed: int = typer.Option(None, "--seed"),
    time_budget: float = typer.Option(None, "--time-budget",
                                      help="Seconds for both of auto's candidates together (model auto only)."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    base_url: str = BaseUrlOpt,
    api_key: str = ApiKeyOpt,
) -> None:
    """Start a fine-tuning job; prints its id (`aiaas jobs wait ID` waits for it to end)."""
    check_output_flags(as_json, quiet)
    def num(v: str, cast: Any) -> Any:
        return v if v == "auto" else cast(v)

    hp = {"n_epochs": num(epochs, int), "batch_size": num(batch_size, int),
          "learning_rate_multiplier": num(lr_multiplier, float)}
    with sdk_client(base_url, api_key) as c:
        job = c.fine_tuning.jobs.create(
            model=model, training_file=training_file, validation_file=validation_file, suffix=suffix,
            hyperparameters=hp, text_column=text_column, label_column=label_column, task=task, seed=seed,
            time_budget_s=time_budget, registered_model=registered_model,
        )
    if as_json or quiet:
        print_json(job) if as_json else print_ids([job.id])
        return
    console.print(f"job [bold]{job.id}[/bold] {job.status}; wait for it with `aiaas jobs wait {job.id}` "
                  f"or follow it with `aiaas jobs events {job.id} --follow`")


@jobs_app.command("list")
@handle_errors
def jobs_list(as_json: bool = JsonOpt, quiet: bool = QuietOpt,
              base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List fine-tuning jobs."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        jobs = list(c.fine_tuning.jobs.list())
    if as_json or quiet:
        print_json(jobs) if as_json else print_ids(j.id for j in jobs)
        return
    table = Table("id", "model", "status", "fine_tuned_model")
    for j in jobs:
        table.add_row(j.id, j.model, j.status, j.fine_tuned_model or "")
    console.print(table)


@jobs_app.command("get")
@handle_errors
def jobs_get(job_id: str, as_json: bool = typer.Option(True, "--json", help="Print JSON (the default here)."),
             quiet: bool = QuietOpt, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Show one job as JSON (-q: its fine-tuned model id, empty until it succeeds)."""
    with sdk_client(base_url, api_key) as c:
        job = c.fine_tuning.jobs.retrieve(job_id)
    if quiet:
        print_ids([job.fine_tuned_model])
    else:
        print_json(job)


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: str, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
                base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Cancel a job; a running one stops within seconds."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        job = c.fine_tuning.jobs.cancel(job_id)
    if as_json or quiet:
        print_json(job) if as_json else print_ids([job.id])
        return
    console.print(f"{job.id}: {job.status}")


@jobs_app.command("wait")
@handle_errors
def jobs_wait(
    job_id: str,
    timeout: float = typer.Option(None, "--timeout", help="Give up after this many seconds (exit 5)."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between status checks."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Show the job's events while waiting."),
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the fine-tuned model id (if it succeeded)."),
    base_url: str = BaseUrlOpt,
    api_key: str = ApiKeyOpt,
) -> None:
    """Wait until a job ends. Exit 0 succeeded, 3 failed, 4 cancelled, 5 --timeout passed first."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        job = follow_job(c, job_id) if follow else c.fine_tuning.jobs.retrieve(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done:
            if deadline is not None and time.monotonic() >= deadline:
                err_console.print(f"{job.id} is still {job.status} after {timeout:g} s")
                raise typer.Exit(EXIT_TIMEOUT)
            left = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            time.sleep(left)
            job = c.fine_tuning.jobs.retrieve(job_id)
    if as_json:
        print_json(job)
    elif quiet:
        print_ids([job.fine_tuned_model])
    elif job.status == "succeeded":
        console.print(f"{job.id} succeeded: {job.fine_tuned_model}")
    else:
        err = job.error or {}
        err_console.print(f"{job.id} {job.status}" + (f": {err.get('code')}: {err.get('message')}" if err else ""))
    if job.status == "failed":
        raise typer.Exit(EXIT_JOB_FAILED)
    if job.status == "cancelled":
        raise typer.Exit(EXIT_JOB_CANCELLED)


@jobs_app.command("events")
@handle_errors
def jobs_events(job_id: str, follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON (with --follow: one event per line)."),
                quiet: bool = QuietOpt, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Show a job's events, oldest first; --follow streams them live with progress bars."""
    import json

    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        if follow and (as_json or quiet):
            for ev in c.fine_tuning.jobs.stream_events(job_id):
                print(json.dumps(ev.to_dict()) if as_json else ev.id, flush=True)
            return
        if follow:
            follow_job(c, job_id)
            return
        events = list(reversed(list(c.fine_tuning.jobs.list_events(job_id))))
    if as_json or quiet:
        print_json(events) if as_json else print_ids(ev.id for ev in events)
        return
    for ev in events:
        console.print(f"[dim]{ev.created_at}[/dim] {ev.level:5} {ev.message}")


def follow_job(c: Any, job_id: str) -> Any:
    """Stream a job's events with rich progress bars (steps, loss, accuracy); returns the final job."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console)
    bar = None
    with progress:
        for ev in c.fine_tuning.jobs.stream_events(job_id):
            data = ev.get("data") or {}
            if ev["type"] == "metrics" and "total_steps" in data:
                if bar is None:
                    bar = progress.add_task("training", total=data["total_steps"], info="")
                info = f"epoch {data.get('epoch', 0):.2f} loss {data.get('loss', float('nan')):.4f}"
                progress.update(bar, completed=data.get("step", 0), info=info)
            elif ev["type"] == "metrics" and ("accuracy" in data or "rmse" in data or "macro_f1" in data):
                progress.console.print(f"  [green]eval[/green] {ev['message']}")
            else:
                style = {"warn": "yellow", "error": "red"}.get(ev["level"], "")
                progress.console.print(f"  [{style}]{ev['message']}[/{style}]" if style else f"  {ev['message']}")
        if bar is not None:
            progress.update(bar, completed=progress.tasks[0].total)
    return c.fine_tuning.jobs.retrieve(job_id)


@models_app.command("list")
@handle_errors
def models_list(as_json: bool = JsonOpt, quiet: bool = QuietOpt,
                base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List base models, model families and your fine-tuned models."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        models = c.models.list().data
    if as_json or quiet:
        print_json(models) if as_json else print_ids(m.id for m in models)
        return
    table = Table("id", "owned_by", "family", "task")
    for m in models:
        table.add_row(m.id, m.owned_by, m.family or "", m.task or "")
    console.print(table)


@handle_errors
def predict(name: str = typer.Argument(..., help="Deployment name."),
            texts: list[str] = typer.Argument(..., help="One or more texts."),
            top_k: int = typer.Option(None, "--top-k"),
            as_json: bool = JsonOpt,
            quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the answers, one per line."),
            base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Call a deployment."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        out = c.deployments.predict(name, texts, top_k=top_k)
    if as_json:
        print_json(out)
        return
    for text, row in zip(texts, out.data, strict=True):
        shown = row.label if row.label is not None else ",".join(row.labels) if row.labels is not None else row.value
        if quiet:
            print(shown)
            continue
        score = f" ({row.score:.3f})" if row.score is not None else ""
        console.print(f"{shown}{score}  <- {text}")
