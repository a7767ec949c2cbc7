"""`llmos top`: the kernel's processes, devices, queues and alerts, live.

On a terminal it runs the textual screen (top_app.py). `--once` prints one snapshot
as tables and exits, for scripts and pipes; without a terminal and without `--once`
it says so and exits 1, as top(1) does, rather than guess which the caller meant."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli import top_view as view
from llmos.cli._shared import TokenOption, UrlOption, connect, console, fail
from llmos.sdk import Client

POLL_TIMEOUT_S = 10.0  # a kernel slower than this to answer sys.top counts as down


def top(
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot as tables and exit (no terminal UI).")
    ] = False,
    all_: Annotated[
        bool, typer.Option("--all", "-a", help="With --once: list ended processes too.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Watch the kernel live: processes, devices, queues, alerts.

    Keys: s sort, S reverse, k kill (asks y/n), +/- priority, a ended too, q quit."""
    if once:
        with connect(url, token) as client:
            data = client.top()
        print_snapshot(data, all_)
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("llmos top needs a terminal; `llmos top --once` prints one snapshot instead")
    from llmos.cli.top_app import TopApp  # textual is loaded only for the live screen

    with Client(url, token, timeout=POLL_TIMEOUT_S) as client:
        TopApp(client, interval).run()


def print_snapshot(data: dict[str, Any], show_all: bool) -> None:
    out = console()
    out.print(view.header(data), soft_wrap=True, markup=False)
    procs = [p for p in data.get("processes") or [] if show_all or p.get("state") not in view.OVER]
    procs = view.sort_rows(procs, 0, False)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in view.PROC_COLUMNS:
        table.add_column(col.title, justify="right" if col.numeric else "left", no_wrap=True)
    for p in procs:
        table.add_row(*view.proc_cells(p))
    out.print()
    out.print(table if procs else "no live processes (--all shows ended ones)")
    devices = Table(box=None, header_style="bold", pad_edge=False)
    for title in view.DEVICE_COLUMNS:
        devices.add_column(title, no_wrap=True)
    for d in data.get("devices") or []:
        devices.add_row(*view.device_cells(d))
    out.print()
    out.print(devices)
    out.print()
    out.print(f"queues  {view.queues(data)}", markup=False)
    alerts = view.alert_lines(data)
    out.print("alerts  " + ("" if alerts else "none"))
    for line in alerts:
        out.print(Text("  ").append_text(line))
