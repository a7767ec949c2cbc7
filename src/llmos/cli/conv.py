"""`llmos talk` and `llmos context`: a process's kernel-kept conversation — send the
next turn, and see what the last prompt was made of."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from llmos.cli._shared import TokenOption, UrlOption, cell, connect, console, echo_stream

PidArg = Annotated[int, typer.Argument(help="The process whose conversation it is.")]


def talk(
    pid: PidArg,
    text: Annotated[str, typer.Argument(help="The next message; `-` reads it from stdin.")],
    model: Annotated[
        str | None,
        typer.Option(help="Model id. Default: the kernel's first model.", show_default=False),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(help="Most tokens to generate. Default: the kernel's.", show_default=False),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature.", show_default=False)
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Send the next turn of PID's conversation and stream the reply.

    Only the new message is sent: the kernel keeps the history, and builds each
    prompt from the core block, recent turns and recalled memories."""
    if text == "-":
        text = sys.stdin.read()
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": temperature}
    with connect(url, token) as client:
        echo_stream(client.send_stream(pid, text, **params))


def context(pid: PidArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Show what the last prompt of PID's conversation was made of."""
    with connect(url, token) as client:
        view = client.context(pid)
    out = console()
    parts: list[dict[str, Any]] = view.get("parts") or []
    if not parts:
        out.print(f"process {pid}: {view.get('note') or 'no prompt yet'}", markup=False)
        return
    typer.echo(
        f"process {pid}: {cell(view.get('prompt_tokens'))} prompt tokens of a "
        f"{cell(view.get('budget'))}-token budget (context {cell(view.get('context_length'))}, "
        f"max_tokens {cell(view.get('max_tokens'))}); window from turn "
        f"{cell(view.get('window_start'))}"
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("PART", no_wrap=True)
    table.add_column("TOKENS", justify="right", no_wrap=True)
    table.add_column("HOLDS", overflow="fold")
    for part in parts:
        table.add_row(cell(part.get("part")), cell(part.get("tokens")), _holds(part))
    out.print(table)


def _holds(part: dict[str, Any]) -> str:
    """Which turns, memories or pinned facts a part of the prompt carries."""
    kind = part.get("part")
    if kind == "core":
        return f"system prompt, {cell(part.get('pinned'))} pinned"
    if kind == "recent_turns":
        turns = part.get("turns") or []
        return f"turns {_spans(turns)}" if turns else "-"
    if kind == "recalled":
        ids = [m.get("id") for m in part.get("memories") or []]
        return f"memories {cell(ids)}" if ids else "-"
    if kind == "new_turn":
        return f"turn {cell(part.get('turn'))}"
    return "-"


def _spans(numbers: list[int]) -> str:
    """`0-3, 7, 9-10`: runs of consecutive numbers shortened."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
