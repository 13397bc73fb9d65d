"""Helpers shared by CLI commands: settings from flags, the SDK client, error printing."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from aiaas.core.errors import AiaasError

console = Console()
err_console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from aiaas.sdk import Client


def apply_env(data_dir: Path | None = None, database_url: str | None = None) -> None:
    """Flags override env: write them into the environment so child processes see them too."""
    from aiaas.core.settings import get_settings

    if data_dir is not None:
        os.environ["AIAAS_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        os.environ["AIAAS_DATABASE_URL"] = database_url
    get_settings.cache_clear()


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print our errors as one readable line and exit 1 (6: server unreachable), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except AiaasError as exc:
            where = f" (param: {exc.param})" if exc.param else ""
            # escape: a message such as "pip install 'aiaas[train]'" is text, not Rich markup.
            err_console.print(f"[red]error[/red] {exc.code}: {escape(exc.message + where)}")
            raise typer.Exit(EXIT_UNREACHABLE if exc.code == "connection_error" else EXIT_ERROR) from None

    return wrapper


def sdk_client(base_url: str | None, api_key: str | None) -> Client:
    from aiaas.sdk import Client

    if not (api_key or os.environ.get("AIAAS_API_KEY")):
        err_console.print("[red]error[/red] set AIAAS_API_KEY or pass --api-key")
        raise typer.Exit(EXIT_USAGE)
    return Client(base_url=base_url, api_key=api_key)


def jsonable(obj: Any) -> Any:
    """SDK results (pydantic models), lists and dicts of them, as plain JSON values."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    data = jsonable(obj)
    if sys.stdout.isatty():
        console.print_json(json.dumps(data))
    else:
        print(json.dumps(data, indent=2))


def print_ids(ids: Iterable[Any]) -> None:
    """--quiet: one id per line on stdout, nothing else (for `$(aiaas ... -q)` and `xargs`)."""
    for item in ids:
        if item is not None:
            print(item)


def check_output_flags(as_json: bool, quiet: bool) -> None:
    if as_json and quiet:
        err_console.print("[red]error[/red] --json and --quiet exclude each other; pick one")
        raise typer.Exit(EXIT_USAGE)


# Exit codes, the same for every command (README, "Exit codes").
EXIT_OK = 0
EXIT_ERROR = 1  # the server or the command refused: the error's code and message are on stderr
EXIT_USAGE = 2  # bad arguments or options, or no API key
EXIT_JOB_FAILED = 3  # `jobs wait`: the job ended failed
EXIT_JOB_CANCELLED = 4  # `jobs wait`: the job ended cancelled
EXIT_TIMEOUT = 5  # `jobs wait --timeout`: the job had not ended in time
EXIT_UNREACHABLE = 6  # the server could not be reached (connection refused, DNS, timeout)

# One default data directory for every command (init, serve, worker, quickstart, orgs, db, secrets).
DEFAULT_DATA_DIR = Path.home() / ".aiaas"


BaseUrlOpt = typer.Option(None, "--base-url", envvar="AIAAS_BASE_URL", help="Server URL (default http://127.0.0.1:8000).")
ApiKeyOpt = typer.Option(None, "--api-key", envvar="AIAAS_API_KEY", help="API key (env AIAAS_API_KEY).")
DataDirOpt = typer.Option(None, "--data-dir", envvar="AIAAS_DATA_DIR", help="Data directory (default ~/.aiaas).")
JsonOpt = typer.Option(False, "--json", help="Print the API's objects as JSON.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only ids, one per line.")
DbOpt = typer.Option(None, "--database-url", envvar="AIAAS_DATABASE_URL", help="Database URL (default SQLite in the data dir).")
