"""Helpers shared by CLI commands: settings from flags, the SDK client, error printing."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from aiaas.core.errors import AiaasError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def apply_env(data_dir: Path | None = None, database_url: str | None = None) -> None:
    """Flags override env: write them into the environment so child processes see them too."""
    from aiaas.core.settings import get_settings

    if data_dir is not None:
        os.environ["AIAAS_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        os.environ["AIAAS_DATABASE_URL"] = database_url
    get_settings.cache_clear()


def handle_errors(fn: F) -> F:
    """Print our errors as one readable line and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AiaasError as exc:
            where = f" (param: {exc.param})" if exc.param else ""
            # escape: a message such as "pip install 'aiaas[train]'" is text, not Rich markup.
            err_console.print(f"[red]error[/red] {exc.code}: {escape(exc.message + where)}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def sdk_client(base_url: str | None, api_key: str | None):  # type: ignore[no-untyped-def]
    from aiaas.sdk import Client

    if not (api_key or os.environ.get("AIAAS_API_KEY")):
        err_console.print("[red]error[/red] set AIAAS_API_KEY or pass --api-key")
        raise typer.Exit(2)
    return Client(base_url=base_url, api_key=api_key)


def print_json(obj: Any) -> None:
    if sys.stdout.isatty():
        console.print_json(json.dumps(obj))
    else:
        print(json.dumps(obj, indent=2))


BaseUrlOpt = typer.Option(None, "--base-url", envvar="AIAAS_BASE_URL", help="Server URL (default http://127.0.0.1:8000).")
ApiKeyOpt = typer.Option(None, "--api-key", envvar="AIAAS_API_KEY", help="API key (env AIAAS_API_KEY).")
DataDirOpt = typer.Option(None, "--data-dir", envvar="AIAAS_DATA_DIR", help="Data directory (default ~/.aiaas).")
DbOpt = typer.Option(None, "--database-url", envvar="AIAAS_DATABASE_URL", help="Database URL (default SQLite in the data dir).")
