"""`llmos alerts`: the anomaly alerts of the processes you may see (`--all` with the
cleared ones), and `llmos alerts clear ID` (admins: lifts the process's throttle)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console


def build() -> typer.Typer:
    app = typer.Typer(
        name="alerts",
        help="Anomaly alerts: runaway token rates, errors, latency, loops.",
        invoke_without_command=True,
    )
    app.callback()(listing)
    app.command("clear")(clear)
    return app


def listing(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", "-a", help="Include alerts that have been cleared.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest this many.")] = 100,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List anomaly alerts (active ones unless --all)."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(url, token) as client:
        alerts = client.alerts(active_only=not all_, limit=limit)
    out = console()
    if not alerts:
        out.print("no alerts" + ("" if all_ else " (--all shows cleared ones)"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("ID", "PID", "OWNER", "KIND", "ACTION", "AGE", "STATE"):
        table.add_column(title, no_wrap=True, justify="right" if title in ("ID", "PID") else "left")
    table.add_column("MESSAGE", overflow="fold")
    for a in alerts:
        cleared = a.get("cleared_at") is not None
        action = str(a.get("action"))
        table.add_row(
            cell(a.get("id")),
            cell(a.get("pid")),
            Text(str(a.get("owner"))),
            cell(a.get("kind")),
            Text(action, style="red" if action == "throttle" and not cleared else ""),
            age(a.get("created_at")),
            Text("cleared", style="dim") if cleared else Text("active", style="yellow"),
            Text(str(a.get("message"))),
        )
    out.print(table)


def clear(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (llmos alerts).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Clear an alert (admins): its process's priority and quota are restored."""
    with connect(url, token) as client:
        alert = client.clear_alert(alert_id)
    typer.echo(f"cleared alert {alert['id']} (process {alert['pid']}, {alert['kind']})")
