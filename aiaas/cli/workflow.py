"""`aiaas files|jobs|models|deploy|predict`: the main job from the command line, through the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import enum

import typer
from rich.table import Table

from aiaas.cli.common import ApiKeyOpt, BaseUrlOpt, console, handle_errors, print_json, sdk_client
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
                 base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Upload a labelled file for fine-tuning; prints its id and what the PII scan found."""
    with sdk_client(base_url, api_key) as c:
        f = c.files.create(path, pii_policy=pii_policy.value)
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
def files_list(base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List uploaded files."""
    with sdk_client(base_url, api_key) as c:
        table = Table("id", "filename", "purpose", "bytes", "rows")
        for f in c.files.list():
            table.add_row(f["id"], f["filename"], f["purpose"], str(f["bytes"]), str((f.get("summary") or {}).get("rows")))
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
    epochs: str = typer.Option("auto", "--epochs"),
    batch_size: str = typer.Option("auto", "--batch-size"),
    lr_multiplier: str = typer.Option("auto", "--lr-multiplier"),
    text_column: str = typer.Option("text", "--text-column"),
    label_column: str = typer.Option("label", "--label-column"),
    task: str = typer.Option(DEFAULT_TASK, "--task"),
    seed: int = typer.Option(None, "--seed"),
    time_budget: float = typer.Option(None, "--time-budget",
                                      help="Seconds for both of auto's candidates together (model auto only)."),
    base_url: str = BaseUrlOpt,
    api_key: str = ApiKeyOpt,
) -> None:
    """Start a fine-tuning job; prints its id."""
    def num(v: str, cast: Any) -> Any:
        return v if v == "auto" else cast(v)

    hp = {"n_epochs": num(epochs, int), "batch_size": num(batch_size, int),
          "learning_rate_multiplier": num(lr_multiplier, float)}
    with sdk_client(base_url, api_key) as c:
        job = c.fine_tuning.jobs.create(
            model=model, training_file=training_file, validation_file=validation_file, suffix=suffix,
            hyperparameters=hp, text_column=text_column, label_column=label_column, task=task, seed=seed,
            time_budget_s=time_budget,
        )
    console.print(f"job [bold]{job['id']}[/bold] {job['status']}; follow it with `aiaas jobs events {job['id']} --follow`")


@jobs_app.command("list")
@handle_errors
def jobs_list(base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List fine-tuning jobs."""
    with sdk_client(base_url, api_key) as c:
        table = Table("id", "model", "status", "fine_tuned_model")
        for j in c.fine_tuning.jobs.list():
            table.add_row(j["id"], j["model"], j["status"], j.get("fine_tuned_model") or "")
    console.print(table)


@jobs_app.command("get")
@handle_errors
def jobs_get(job_id: str, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Show one job (JSON)."""
    with sdk_client(base_url, api_key) as c:
        print_json(c.fine_tuning.jobs.retrieve(job_id))


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: str, base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Cancel a job; a running one stops within seconds."""
    with sdk_client(base_url, api_key) as c:
        job = c.fine_tuning.jobs.cancel(job_id)
    console.print(f"{job['id']}: {job['status']}")


@jobs_app.command("events")
@handle_errors
def jobs_events(job_id: str, follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
                base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Show a job's events; --follow streams them live with progress bars."""
    with sdk_client(base_url, api_key) as c:
        if follow:
            follow_job(c, job_id)
            return
        events = list(c.fine_tuning.jobs.list_events(job_id))
    for ev in reversed(events):
        console.print(f"[dim]{ev['created_at']}[/dim] {ev['level']:5} {ev['message']}")


def follow_job(c: Any, job_id: str) -> dict:
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
def models_list(base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List base models and your fine-tuned models."""
    with sdk_client(base_url, api_key) as c:
        models = c.models.list()["data"]
    table = Table("id", "owned_by", "family", "task")
    for m in models:
        table.add_row(m["id"], m["owned_by"], m.get("family") or "", m.get("task") or "")
    console.print(table)


@handle_errors
def deploy(model: str = typer.Argument(..., help="Fine-tuned model id."),
           name: str = typer.Option(..., "--name", help="Deployment name (lowercase, digits, dashes)."),
           min_replicas: int = typer.Option(0, "--min-replicas", help="1 keeps it loaded; 0 scales to zero."),
           base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Deploy a fine-tuned model behind a named endpoint."""
    with sdk_client(base_url, api_key) as c:
        d = c.deployments.create(name, model=model, min_replicas=min_replicas)
    console.print(f"deployment [bold]{d['name']}[/bold] serves {d['model']}")


@handle_errors
def predict(name: str = typer.Argument(..., help="Deployment name."),
            texts: list[str] = typer.Argument(..., help="One or more texts."),
            top_k: int = typer.Option(None, "--top-k"),
            base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Call a deployment."""
    with sdk_client(base_url, api_key) as c:
        out = c.deployments.predict(name, texts, top_k=top_k)
    for text, row in zip(texts, out["data"], strict=True):
        shown = row.get("label") or row.get("labels") or row.get("value")
        score = f" ({row['score']:.3f})" if "score" in row else ""
        console.print(f"{shown}{score}  <- {text}")
