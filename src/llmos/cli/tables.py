"""`llmos ps`, `spawn`, `kill`, `renice`, `info`, `devices`: processes and the kernel's state."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console
from llmos.cli.cluster import events_table
from llmos.params import DEFAULT_PRIORITY, MAX_PRIORITY

_STATE_STYLE = {
    "running": "green",
    "waiting": "yellow",
    "ready": "cyan",
    "suspended": "magenta",
    "exited": "dim",
    "killed": "red",
}
_OVER = ("exited", "killed")


def ps(
    all_: Annotated[
        bool, typer.Option("--all", "-a", help="Include processes that have exited or been killed.")
    ] = False,
    devices_: Annotated[
        bool, typer.Option("--devices", help="List the devices and their capabilities instead.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List processes (live ones unless --all), or the devices (--devices)."""
    if devices_:
        devices(url, token)
        return
    with connect(url, token) as client:
        procs = client.processes()
    if not all_:
        procs = [p for p in procs if p.get("state") not in _OVER]
    out = console()
    if not procs:
        out.print("no processes" + ("" if all_ else " (--all shows finished ones)"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("PID", justify="right", no_wrap=True)
    table.add_column("NAME", overflow="fold")
    table.add_column("OWNER")
    table.add_column("STATE", no_wrap=True)
    table.add_column("PRIO", justify="right")
    table.add_column("REQS", justify="right")
    table.add_column("TOK IN", justify="right")
    table.add_column("TOK OUT", justify="right")
    programs = any(p.get("os_pid") for p in procs)  # agents (llmos run): their CPU, os pid
    if programs:
        table.add_column("CPU", justify="right")
        table.add_column("OSPID", justify="right")
    table.add_column("PREEMPT", justify="right")
    table.add_column("AGE", justify="right", no_wrap=True)
    for p in sorted(procs, key=lambda p: int(p.get("pid") or 0)):
        state = str(p.get("state", "?"))
        table.add_row(
            cell(p.get("pid")),
            cell(p.get("name")),
            cell(p.get("owner")),
            f"[{_STATE_STYLE.get(state, '')}]{state}[/]" if state in _STATE_STYLE else state,
            cell(p.get("priority")),
            cell(p.get("requests")),
            cell(p.get("tokens_in")),
            cell(p.get("tokens_out")),
            *((_cpu(p), cell(p.get("os_pid"))) if programs else ()),
            cell(p.get("preemptions")),
            age(p.get("created_at"), p.get("finished_at")),
        )
    out.print(table)


def _cpu(p: dict[str, Any]) -> str:
    return "-" if p.get("cpu_s") is None else f"{p['cpu_s']:.1f}s"


def spawn(
    name: Annotated[str, typer.Argument(help="A name for the process.")],
    priority: Annotated[
        int, typer.Option(help=f"0..{MAX_PRIORITY}; higher runs earlier under priority policies.")
    ] = DEFAULT_PRIORITY,
    max_concurrent: Annotated[
        int | None,
        typer.Option(help="Most requests in flight at once; more get 429.", show_default=False),
    ] = None,
    token_budget: Annotated[
        int | None,
        typer.Option(help="Most tokens in and out, in all; then 403.", show_default=False),
    ] = None,
    memory_shared: Annotated[
        bool, typer.Option(help="It may also read and write your shared memories.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Start a process and print its pid and token.

    The output is shell assignments: `eval "$(llmos spawn agent)"` then
    `LLMOS_TOKEN=$token python agent.py` accounts the agent's requests to the process."""
    with connect(url, token) as client:
        proc = client.spawn(
            name,
            priority,
            max_concurrent=max_concurrent,
            token_budget=token_budget,
            memory_shared=memory_shared,
        )
    typer.echo(f"pid={proc['pid']}\ntoken={proc['token']}")


def kill(
    pid: Annotated[int, typer.Argument(help="The process to kill.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Kill a process: its queued requests fail, running ones stop at the next token."""
    with connect(url, token) as client:
        proc = client.kill(pid)
    state = proc.get("state")
    if state == "killed":
        typer.echo(f"killed {proc.get('pid', pid)} ({proc.get('name')})")
    else:
        typer.echo(f"process {proc.get('pid', pid)} ({proc.get('name')}) is {state}")


def renice(
    priority: Annotated[
        int, typer.Argument(help=f"The new priority, 0..{MAX_PRIORITY} (higher runs earlier).")
    ],
    pid: Annotated[int, typer.Argument(help="The process.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a process's priority (its queued requests too). Raising it takes an admin."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise typer.BadParameter(f"must be 0..{MAX_PRIORITY}", param_hint="PRIORITY")
    with connect(url, token) as client:
        proc = client.renice(pid, priority)
    typer.echo(f"process {proc.get('pid', pid)} ({proc.get('name')}) priority {proc['priority']}")


def info(url: UrlOption = None, token: TokenOption = None) -> None:
    """Show the kernel's version, uptime, policy, capacity and load."""
    with connect(url, token) as client:
        data = client.info()
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in data.items():
        if key == "uptime_s":
            key, value = "uptime", age(1.0, 1.0 + float(value))
        table.add_row(key.replace("_", " "), cell(value))
    console().print(table)


_DEVICE_COLUMNS: list[tuple[str, str]] = [
    ("NAME", "name"),
    ("KIND", "kind"),
    ("MODEL", "model"),
    ("SLOTS", "slots"),
    ("CTX", "context_length"),
    ("OK", "healthy"),
    ("CIRCUIT", "breaker"),
    ("RUN", "running"),
    ("PEAK", "peak_running"),
    ("WAIT", "waiting"),
    ("CAPABILITIES", "capabilities"),
]


def devices(url: UrlOption = None, token: TokenOption = None) -> None:
    """List the engines the kernel schedules onto."""
    with connect(url, token) as client:
        rows: list[dict[str, Any]] = client.devices()
        grouped = any(d.get("group") for d in rows)
        decisions = client.cluster_events(DECISIONS_SHOWN) if grouped else []
    # a replica group's and a Ray node's columns, when some device has one
    cluster = [c for c in _CLUSTER_COLUMNS if any(_device_value(d, c[1]) for d in rows)]
    columns = [*_DEVICE_COLUMNS[:3], *cluster, *_DEVICE_COLUMNS[3:]]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title, key in columns:
        text = ("name", "kind", "model", "capabilities", "healthy", "breaker", "group", "node")
        table.add_column(title, justify="left" if key in text else "right", no_wrap=True)
    for d in rows:
        healthy = d.get("healthy")
        mark = cell(healthy) if healthy is None else ("[green]yes[/]" if healthy else "[red]no[/]")
        table.add_row(
            *(mark if key == "healthy" else cell(_device_value(d, key)) for _, key in columns)
        )
    console().print(table)
    if decisions:  # the autoscaler's latest, newest first (all of them: llmos cluster)
        console().print(events_table(decisions))


DECISIONS_SHOWN = 5
_CLUSTER_COLUMNS = [("GROUP", "group"), ("NODE", "node")]


def _device_value(d: dict[str, Any], key: str) -> Any:
    if key == "node":  # a Ray device's node (its details)
        return (d.get("details") or {}).get("node")
    if key == "name" and d.get("draining"):
        return f"{d['name']} (draining)"
    return d.get(key)
