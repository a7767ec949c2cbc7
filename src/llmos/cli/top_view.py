"""What `llmos top` shows, as plain rows and lines: one place for the columns, the
sort orders and the formatting, shared by the live TUI (top_app.py) and the
one-shot table (`llmos top --once`). Input is the `sys.top` dict (Client.top())."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text

from llmos.cli import tables
from llmos.cli._shared import age, cell

OVER = tables._OVER  # the states of an ended process
STATE_STYLE = tables._STATE_STYLE
ENDED_VISIBLE_S = 30.0  # an ended process stays listed this long (then only with `a`)

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    numeric: bool
    descending: bool  # its first sort order: biggest first, as top(1) does for rates

    def value(self, row: Row) -> Any:
        v = row.get(self.key)
        if self.numeric:
            return v if isinstance(v, int | float) and not isinstance(v, bool) else -1
        return str(v if v is not None else "").lower()


PROC_COLUMNS: tuple[Column, ...] = (
    Column("PID", "pid", True, False),
    Column("NAME", "name", False, False),
    Column("OWNER", "owner", False, False),
    Column("STATE", "state", False, False),
    Column("PRIO", "priority", True, True),
    Column("TOK/S", "tokens_per_s", True, True),
    Column("RUN", "running", True, True),
    Column("WAIT", "waiting", True, True),
    Column("TOK OUT", "tokens_out", True, True),
    Column("PREEMPT", "preemptions", True, True),
)
DEVICE_COLUMNS = ("NAME", "MODEL", "BUSY/SLOTS", "TOK/S", "WAITING", "BREAKER")


def visible(procs: list[Row], show_all: bool, now: float) -> list[Row]:
    """Live processes, and ended ones for ENDED_VISIBLE_S after they ended (so a kill
    is seen to land); every process with `show_all`."""
    if show_all:
        return list(procs)
    return [
        p
        for p in procs
        if p.get("state") not in OVER or now - float(p.get("finished_at") or 0) < ENDED_VISIBLE_S
    ]


def sort_rows(procs: list[Row], column: int, reverse: bool) -> list[Row]:
    """By PROC_COLUMNS[column] in its first order (flipped by `reverse`), ties by pid."""
    col = PROC_COLUMNS[column]
    by_pid = sorted(procs, key=lambda p: int(p.get("pid") or 0))
    return sorted(by_pid, key=col.value, reverse=col.descending != reverse)


def sort_label(column: int, reverse: bool) -> str:
    col = PROC_COLUMNS[column]
    return f"{col.title} {'▼' if col.descending != reverse else '▲'}"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def rate(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def proc_cells(p: Row) -> list[Text]:
    """Text, not str: a name like `[/]` is shown as it is, never read as markup."""
    state = str(p.get("state", "?"))
    return [
        Text(cell(p.get("pid"))),
        Text(cell(p.get("name"))),
        Text(cell(p.get("owner"))),
        state_text(state),
        Text(cell(p.get("priority"))),
        Text(rate(p.get("tokens_per_s"))),
        Text(cell(p.get("running"))),
        Text(cell(p.get("waiting"))),
        Text(cell(p.get("tokens_out"))),
        Text(cell(p.get("preemptions"))),
    ]


def device_cells(d: Row) -> list[Text]:
    breaker = str(d.get("breaker", "-"))
    return [
        Text(cell(d.get("name"))),
        Text(cell(d.get("model"))),
        Text(f"{cell(d.get('busy'))}/{cell(d.get('slots'))}"),
        Text(rate(d.get("tokens_per_s"))),
        Text(cell(d.get("waiting"))),
        Text(breaker, style="green" if breaker == "closed" else "red"),
    ]


def size(n: object) -> str:
    """1536 -> '1.5 KiB'."""
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def header(data: Row) -> str:
    """policy, uptime, running/waiting, CPU, RSS, tokens/s: the first line."""
    system = data.get("system") or {}
    sample = data.get("sample") or {}
    cpu = system.get("cpu_percent")
    kids = system.get("children_cpu_percent")
    parts = [
        f"policy {data.get('policy', '-')}",
        f"up {age(1.0, 1.0 + float(data.get('uptime_s') or 0))}",
        f"running {cell(data.get('running'))}",
        f"waiting {cell(data.get('waiting'))}",
        f"CPU {rate(cpu)}%" + (f" (+{rate(kids)}% children)" if kids else ""),
        f"RSS {size(system.get('rss_bytes'))}",
        f"{rate(sample.get('tokens_per_s'))} tok/s",
        f"{cell(system.get('cores'))} cores",
    ]
    return " · ".join(parts)


def queues(data: Row) -> str:
    depth = data.get("queues") or {}
    if not depth:
        return "no models"
    return "  ".join(f"{model}: {n}" for model, n in sorted(depth.items()))


def alert_lines(data: Row, limit: int = 8) -> list[Text]:
    """Open alerts first, then the most recent cleared ones (dimmed)."""
    alerts: list[Row] = list(data.get("alerts") or [])
    alerts.sort(key=lambda a: (a.get("cleared_at") is None, a.get("created_at") or 0))
    alerts.reverse()
    return [_alert(a) for a in alerts[:limit]]


def _alert(a: Row) -> Text:
    who = f"pid {a['pid']}" if a.get("pid") is not None else "system"
    if a.get("owner"):
        who += f" ({a['owner']})"
    text = f"{a.get('kind', 'alert')}: {who} {a.get('message', '')}".rstrip()
    if a.get("value") is not None and a.get("threshold") is not None:
        text += f" [{cell(a['value'])} > {cell(a['threshold'])}]"
    if a.get("action"):
        text += f" → {a['action']}"
    style = "dim" if a.get("cleared_at") is not None else "bold red"
    return Text(text, style=style)
