"""`llmos cluster`: replica groups, where requests were placed, and the latest
scaling decisions; `llmos scale GROUP N`: add or drain replicas (admin)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmos.cli._shared import JsonOption, TokenOption, UrlOption, age, cell, connect, console

_ACTION_STYLE = {"up": "green", "down": "cyan", "replace": "yellow", "failed": "red"}


def cluster(
    events: Annotated[
        int, typer.Option(help="How many of the latest scaling events to show.", min=0, max=1000)
    ] = 10,
    json_: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Replica groups (replicas within min..max, load, draining replicas), the
    placement mode with how many requests each rule placed, and the latest scaling
    decisions (up, down, replace, failed) with their reasons."""
    with connect(url, token) as client:
        status = client.cluster()
        rows = client.cluster_events(events) if events else []
    if json_:
        typer.echo(json.dumps({**status, "events": rows}, indent=2))
        return
    out = console()
    if status["groups"]:
        out.print(_groups_table(status["groups"]))
    else:
        out.print("no replica groups (start llmos up with --cluster FILE)")
    placement = status["placement"]
    counts = ", ".join(f"{rule} {n}" for rule, n in sorted(placement["counts"].items()))
    out.print(f"placement: {placement['mode']}" + (f" ({counts})" if counts else ""))
    if rows:
        out.print(events_table(rows))
    elif events:
        out.print("no scaling events yet")


def scale(
    group: Annotated[str, typer.Argument(help="The replica group.")],
    replicas: Annotated[int, typer.Argument(help="How many replicas, within its min..max.")],
    json_: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add or drain replicas of a group until it has REPLICAS (admin). A drained
    replica's running requests resume on the others: nothing is lost."""
    with connect(url, token) as client:
        result = client.scale(group, replicas)
    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    out = console()
    out.print(f"{escape(result['group'])}: {result['replicas']} replicas")
    if result["events"]:
        out.print(events_table(result["events"]))


def _groups_table(groups: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("GROUP", "REPLICAS", "MIN", "MAX", "SLOTS", "RUN", "WAIT", "DEVICES"):
        table.add_column(title, justify="left" if title in ("GROUP", "DEVICES") else "right")
    for g in groups:
        draining = set(g["draining"])
        devices = [f"{d} (draining)" if d in draining else d for d in g["devices"]]
        replicas = str(g["replicas"]) + (" [yellow]changing[/]" if g.get("changing") else "")
        table.add_row(
            escape(g["group"]),
            replicas,
            str(g["min"]),
            str(g["max"]),
            str(g["slots"]),
            str(g["running"]),
            str(g["waiting"]),
            escape(cell(devices)),
        )
    return table


def events_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("AGE", "GROUP", "ACTION", "DEVICE", "REPLICAS", "REASON"):
        table.add_column(title, justify="right" if title in ("AGE", "REPLICAS") else "left")
    for e in rows:
        action = e["action"]
        style = _ACTION_STYLE.get(action, "")
        table.add_row(
            age(e.get("at")),
            escape(e["group"]),
            f"[{style}]{action}[/]" if style else escape(action),
            escape(cell(e.get("device"))),
            str(e["replicas"]),
            escape(e["reason"]),
        )
    return table
