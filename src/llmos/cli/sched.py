"""`llmos sched`: show the scheduler, or switch its policy and knobs at run time."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, cell, connect, console, fail
from llmos.params import POLICY_NAMES


def sched(
    policy: Annotated[
        str | None,
        typer.Argument(
            help=f"Switch to this policy: {', '.join(POLICY_NAMES)}. Default: keep it.",
            show_default=False,
        ),
    ] = None,
    quantum: Annotated[
        int | None,
        typer.Option(help="Tokens a request runs before rr/mlfq may preempt it."),
    ] = None,
    aging_s: Annotated[
        float | None,
        typer.Option(help="Seconds of waiting that raise a request's priority one step."),
    ] = None,
    mlfq_levels: Annotated[int | None, typer.Option(help="Number of mlfq queues.")] = None,
    mlfq_boost_s: Annotated[
        float | None, typer.Option(help="Seconds between mlfq's boosts of all to the top.")
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            metavar="OWNER=W",
            help="The fair policy's share for an owner; repeat for more owners.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show the scheduler's state; with a POLICY or knob options, change it (admin)."""
    weights = _weights(weight or [])
    knobs = (quantum, aging_s, mlfq_levels, mlfq_boost_s)
    changing = policy is not None or weights or any(v is not None for v in knobs)
    with connect(url, token) as client:
        if not changing:
            state = client.scheduler()
        else:
            state = client.set_scheduler(
                policy,
                quantum=quantum,
                aging_s=aging_s,
                mlfq_levels=mlfq_levels,
                mlfq_boost_s=mlfq_boost_s,
                weights=weights or None,
            )
    console().print(_table(state))


def _weights(items: list[str]) -> dict[str, float]:
    """OWNER=W pairs; a malformed one is a usage error."""
    out: dict[str, float] = {}
    for item in items:
        owner, _, value = item.rpartition("=")
        try:
            share: float | None = float(value)
        except ValueError:
            share = None
        if not owner or share is None:
            fail(f"--weight takes OWNER=WEIGHT, got {item!r}", EXIT_USAGE)
        out[owner] = share
    return out


def _table(state: dict[str, Any]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    hit = state.get("resume_cache_hit")
    decision = state.get("decision_us")
    rows = [
        ("policy", cell(state.get("policy"))),
        ("quantum", cell(state.get("quantum"))),
        ("preemptions", cell(state.get("preemptions"))),
        ("resumes", cell(state.get("resumes"))),
        ("resume cache hit", "-" if hit is None else f"{float(hit):.0%}"),
        ("decision time", "-" if decision is None else f"{float(decision):.1f} us"),
        ("waiting", cell(state.get("waiting"))),
    ]
    weights = state.get("weights")
    if weights:
        rows.append(("weights", ", ".join(f"{o}={w:g}" for o, w in sorted(weights.items()))))
    for key, value in rows:
        table.add_row(key, value)
    return table
