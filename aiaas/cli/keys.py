"""`aiaas keys create|list|revoke`, through the SDK."""

from __future__ import annotations

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

keys_app = typer.Typer(help="API keys of your organisation (needs an admin key).", no_args_is_help=True)


@keys_app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="A name to recognise the key by."),
    scope: list[str] = typer.Option(["read", "write"], "--scope", "-s", help="admin, write, infer or read; repeatable."),
    expires_in: int = typer.Option(None, "--expires-in", help="Seconds until the key expires."),
    as_json: bool = typer.Option(False, "--json", help="Print the created key as JSON (`key`: the secret)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the key itself (the secret), nothing else."),
    base_url: str = BaseUrlOpt,
    api_key: str = ApiKeyOpt,
) -> None:
    """Create a key and print it once."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        created = c.api_keys.create(name, scopes=scope, expires_in_seconds=expires_in)
    if as_json or quiet:
        print_json(created) if as_json else print_ids([created.key])
        return
    console.print(f"created {created.id} scopes={','.join(created.scopes)}; the key (shown once):")
    print(created.key)


@keys_app.command("list")
@handle_errors
def list_(
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    base_url: str = BaseUrlOpt,
    api_key: str = ApiKeyOpt,
) -> None:
    """List keys (never their secret part)."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        keys = list(c.api_keys.list())
    if as_json or quiet:
        print_json(keys) if as_json else print_ids(k.id for k in keys)
        return
    table = Table("id", "name", "prefix", "scopes", "expires_at", "revoked_at")
    for k in keys:
        table.add_row(k["id"], k["name"], k["prefix"] + "…", ",".join(k["scopes"]), str(k["expires_at"] or ""),
                      str(k["revoked_at"] or ""))
    console.print(table)


@keys_app.command("revoke")
@handle_errors
def revoke(key_id: str, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
           base_url: str = BaseUrlOpt, api_key: str = ApiKeyOpt) -> None:
    """Revoke a key; it stops working at once."""
    check_output_flags(as_json, quiet)
    with sdk_client(base_url, api_key) as c:
        row = c.api_keys.revoke(key_id)
    if as_json or quiet:
        print_json(row) if as_json else print_ids([row.id])
        return
    console.print(f"revoked {row.id} at {row.revoked_at}")
