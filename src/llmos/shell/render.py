"""How the shell shows things: a plan before it runs (irreversible steps marked),
and each step's result as it arrives — a table for a list, key/value lines for an
object, a file's text as text."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from llmos.shell.executor import StepResult
from llmos.shell.plan import Plan, Step

# The columns worth showing for a syscall's list result (others: the first keys).
COLUMNS: dict[str, tuple[str, ...]] = {
    "proc.list": ("pid", "name", "owner", "state", "priority", "requests", "tokens_out"),
    "fs.list": ("path", "size", "version"),
    "fs.search": ("path", "version", "snippet"),
    "fs.versions": ("version", "size", "deleted"),
    "mem.search": ("id", "score", "text"),
    "mem.list": ("id", "text", "tags"),
    "job.list": ("id", "status", "kind", "owner"),
    "sys.devices": ("name", "kind", "model", "slots", "healthy"),
    "sys.models": ("id", "device", "context_length"),
    "tool.list": ("name", "description", "source"),
    "user.list": ("name", "role", "groups"),
    "token.list": ("id", "name", "owner", "role", "expires_at"),
    "share.list": ("id", "kind", "owner", "resource", "principal", "perm"),
    "conv.history": ("idx", "role", "content"),
}
MAX_COLUMNS = 6
MAX_CELL = 200  # characters of one value in a table


def step_line(step: Step) -> str:
    """`proc.kill pid=3`: a step as one line."""
    args = " ".join(f"{k}={_compact(v)}" for k, v in step.args.items())
    return f"{step.syscall} {args}".rstrip()


def plan_view(plan: Plan) -> RenderableType:
    head = Text("plan", style="bold")
    by = "the model's: check it" if plan.source == "model" else plan.source
    head.append(f" ({by})", style="dim")
    if plan.explanation:
        head.append(f": {plan.explanation}")
    lines: list[RenderableType] = [head]
    for i, step in enumerate(plan.steps, 1):
        line = Text(f"  {i}. {step_line(step)}")
        if step.irreversible:
            line.append("  [irreversible]", style="bold red")
        lines.append(line)
    return Group(*lines)


def result_view(done: StepResult) -> RenderableType:
    """A finished step's result, readably (errors are the caller's to print)."""
    value = done.result
    if done.step.syscall == "fs.read" and isinstance(value, dict):
        content = value.get("content")
        if isinstance(content, str):
            return Text(content)
        return Text(f"{value.get('path')}: {value.get('size')} bytes of binary data")
    if isinstance(value, list):
        return _table(done.step.syscall, value)
    if isinstance(value, dict):
        return _pairs(value)
    return Text("done" if value is None else str(value))


def _table(syscall: str, rows: list[Any]) -> RenderableType:
    if not rows:
        return Text("(none)", style="dim")
    if not all(isinstance(r, dict) for r in rows):
        return Text("\n".join(_compact(r) for r in rows))
    columns = [c for c in COLUMNS.get(syscall, ()) if any(c in r for r in rows)]
    if not columns:
        columns = [k for k, v in rows[0].items() if not isinstance(v, dict | list)][:MAX_COLUMNS]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column.upper(), overflow="fold")
    for row in rows:
        table.add_row(*(Text(_compact(row.get(c), c)) for c in columns))
    return table


def _pairs(value: dict[str, Any]) -> RenderableType:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, item in value.items():
        table.add_row(key.replace("_", " "), Text(_compact(item, key)))
    return table


def _compact(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        text = " ".join(value.split())
    elif isinstance(value, float):
        text = f"{value:.6f}".rstrip("0").rstrip(".")
    elif isinstance(value, int):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
