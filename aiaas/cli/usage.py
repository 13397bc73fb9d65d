"""`aiaas usage`: the organisation's usage and cost, through the SDK."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import typer
from rich.table import Table

from aiaas.cli.common import (
    ApiKeyOpt,
    BaseUrlOpt,
    JsonOpt,
    console,
    err_console,
    handle_errors,
    print_json,
    sdk_client,
)


def _day(text: str | None, *, end: bool) -> int | None:
    """YYYY-MM-DD (UTC; an end day is included) or unix seconds."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        err_console.print(f"[red]error[/red] {text!r} is not a date (YYYY-MM-DD) or unix seconds")
        raise typer.Exit(2) from None
    if end:
        day += timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@handle_errors
def usage(
    start: str = typer.Option(None, "--start", help="First day (YYYY-MM-DD, UTC) or unix s; default -30d."),
    end: str = typer.Option(None, "--end", help="Last day, included (YYYY-MM-DD) or unix s; default now."),
    group_by: str = typer.Option("day", "--group-by", help="day, model or key."),
    as_json: bool = JsonOpt,
    base_url: str = BaseUrlOpt,
    api_key: str = ApiKeyOpt,
) -> None:
    """Requests, tokens, CPU time and cost, from the server's price sheet."""
    if group_by not in ("day", "model", "key"):
        err_console.print("[red]error[/red] --group-by must be day, model or key")
        raise typer.Exit(2)
    with sdk_client(base_url, api_key) as c:
        report = c.usage.retrieve(start=_day(start, end=False), end=_day(end, end=True), group_by=group_by)
    if as_json:
        print_json(report)
        return
    currency = report["prices"]["currency"].upper()
    first = {"day": "day", "model": "model", "key": "key"}[group_by]
    table = Table(first, "requests", "input tokens", "trained tokens", "CPU s", f"cost ({currency})")

    def row(label: str, item: Any) -> None:
        table.add_row(label, str(item["requests"]), str(item["input_tokens"]), str(item["trained_tokens"]),
                      f"{item['cpu_seconds']:.1f}", f"{item['cost']['total']:.4f}")

    for item in report["data"]:
        if group_by == "key":
            label = f"{item['key_name']} ({item['key_id']})" if item.get("key_name") else str(item["key_id"])
        else:
            label = str(item[first])
        row(label, item)
    row("total", report["total"])
    console.print(table)
