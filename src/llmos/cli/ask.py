"""`llmos ask "why is it slow?"`: the kernel gathers its figures and the model
explains them; the answer is printed, then the facts it was given (dimmed)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, connect, console


def ask(
    question: Annotated[str, typer.Argument(help="A question about the system, in words.")],
    model: Annotated[
        str | None, typer.Option(help="The model to answer. Default: the first device's.")
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(min=1, max=200, help="Most tokens of the answer.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")] = (
        False
    ),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Ask the kernel about its state (queue, latency, slow processes, alerts)."""
    with connect(url, token) as client:
        reply = client.ask(question, model=model, max_tokens=max_tokens)
    if as_json:
        typer.echo(json.dumps(reply, indent=2))
        return
    out = console()
    out.print(Text(str(reply.get("answer", ""))))
    facts = reply.get("facts") or []
    if facts:
        out.print()
        out.print(Text("Facts:", style="dim"))
        for fact in facts:
            out.print(Text(f"  {fact}", style="dim"))
