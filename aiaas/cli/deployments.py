"""`aiaas deployments create|list|get|delete` (and `aiaas deploy`, kept as an alias of create), and
`aiaas deployments logs export` (the sampled requests as a training file), through the SDK."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from aiaas.cli.common import (
    ApiKeyOpt,
    BaseUrlOpt,
    JsonOpt,
    QuietOpt,
    check_output_flags,
    console,
    handle_errors,
    print_ids,
    print_json,
    sdk_client,
)

deployments_app = typer.Typer(help="Deployments: named endpoints serving a fine-tuned model.", no_args_is_help=True)
logs_app = typer.Typer(help="A deployment's sampled requests (turn sampling on: "
                            "`aiaas deployments update NAME --log-sample-rate 0.05`).", no_args_is_help=True)
deployments_app.add_typer(logs_app, name="logs")


@deployments_app.command("create")
@handle_errors
def create(model: str = typer.Argument(..., help="Fine-tuned model id."),
           name: str = typer.Option(..., "--name", help="Deployment name (lowercase, digits, dashes)."),
           min_replicas: int = typer.Option(0, "--min-replicas", help="1 keeps it loaded; 0 scales to zero."),
           max_replicas: int = typer.Option(None, "--max-replicas",
                                            help="At most this many inference threads (Ray: replicas) at once."),
           as_json: bool = JsonOpt, quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only its name."),
           base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Deploy a fine-tuned model behind a named endpoint (`aiaas deploy` is the same command)."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        d = c.deployments.create(name, model=model, min_replicas=min_replicas, max_replicas=max_replicas)
    if as_json or quiet:
        print_json(d) if as_json else print_ids([d.name])
        return
    console.print(f"deployment [bold]{d.name}[/bold] serves {d.model}")


@deployments_app.command("list")
@handle_errors
def list_(as_json: bool = JsonOpt, quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only names."),
          base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """List deployments."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        rows = list(c.deployments.list())
    if as_json or quiet:
        print_json(rows) if as_json else print_ids(d.name for d in rows)
        return
    # For people: names and models whole (ids: `-q` or `--json`); a model id is never cut short.
    table = Table("name", "model", "min_replicas", "max_replicas")
    table.columns[1].no_wrap = True
    for d in rows:
        table.add_row(d.name, d.model, str(d.min_replicas), "-" if d.max_replicas is None else str(d.max_replicas))
    console.print(table)


@deployments_app.command("get")
@handle_errors
def get(name: str = typer.Argument(..., help="Deployment name."),
        as_json: bool = typer.Option(True, "--json", help="Print JSON (the default here)."), quiet: bool = QuietOpt,
        base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Show one deployment as JSON (-q: its id)."""
    with sdk_client(base_url, api_key) as c:
        d = c.deployments.retrieve(name)
    if quiet:
        print_ids([d.id])
    else:
        print_json(d)


@deployments_app.command("delete")
@handle_errors
def delete(name: str = typer.Argument(..., help="Deployment name."),
           as_json: bool = JsonOpt, quiet: bool = QuietOpt,
           base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Delete a deployment (the model stays; deploy it again any time)."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        gone = c.deployments.delete(name)
    if as_json or quiet:
        print_json(gone) if as_json else print_ids([gone.id])
        return
    console.print(f"deleted deployment {name}")


@logs_app.command("export")
@handle_errors
def export_logs(name: str = typer.Argument(..., help="Deployment name."),
                output: Path = typer.Option(None, "--output", "-o", help="Also write the JSONL here."),
                as_json: bool = JsonOpt, quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the file id."),
                base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """The sampled requests kept, as a new training file on the server (JSONL: `text` and the answer per
    line), to relabel and fine-tune on; `-o` also downloads it."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        f = c.deployments.export_request_logs(name)
        if output is not None:
            output.write_bytes(c.files.content(f.id))
    if as_json or quiet:
        print_json(f) if as_json else print_ids([f.id])
        return
    records = (f.summary or {}).get("rows")
    where = f" -> {output}" if output is not None else ""
    console.print(f"file [bold]{f.id}[/bold] ({records if records is not None else '?'} records, "
                  f"{f.bytes} bytes){where}")
