"""`llmos app`: the apps the kernel hosts — list them, call one (each call runs as a
process of yours, shown by `llmos ps --all`)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, cell, connect, console, fail

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


def build() -> typer.Typer:
    app = typer.Typer(
        name="app",
        help="Apps: services you call by name (customer_service, recommendation_system, …).",
        no_args_is_help=True,
    )
    app.command("ls")(ls)
    app.command("call")(call)
    return app


def ls(raw: JsonFlag = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """List the apps, with their aliases and what input they take."""
    with connect(url, token) as client:
        apps = client.apps()
    if raw:
        typer.echo(json.dumps(apps, indent=2))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("NAME", "ALIASES", "PRIO", "INPUT", "DESCRIPTION"):
        table.add_column(title, overflow="fold", justify="right" if title == "PRIO" else "left")
    for a in apps:
        table.add_row(
            Text(str(a.get("name"))),
            Text(cell(a.get("aliases"))),
            cell(a.get("priority")),
            "required" if a.get("needs_input") else "optional",
            Text(str(a.get("description") or "")),
        )
    console().print(table)


def call(
    name: Annotated[str, typer.Argument(help="The app's name or alias.")],
    text: Annotated[
        str | None,
        typer.Argument(
            help="The input as text (a question, a text to summarize); `-` reads stdin.",
            show_default=False,
        ),
    ] = None,
    json_input: Annotated[
        str | None,
        typer.Option(
            "--json",
            help='The input as JSON, e.g. \'{"history": ["dune"], "k": 3}\'.',
            show_default=False,
        ),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print the raw JSON answer.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Call an app. No input: its default answer (a greeting, the popular items)."""
    if text is not None and json_input is not None:
        fail("give the input as TEXT or as --json, not both", EXIT_USAGE)
    value: Any = None
    if json_input is not None:
        try:
            value = json.loads(json_input)
        except ValueError as exc:
            fail(f"--json is not valid JSON: {exc}", EXIT_USAGE)
    elif text == "-":
        value = sys.stdin.read()
    else:
        value = text
    with connect(url, token) as client:
        answer = client.serve(name, value)
    if raw:
        typer.echo(json.dumps(answer, indent=2))
        return
    show(answer.get("result"))
    usage = answer.get("usage") or {}
    typer.echo(
        f"({answer.get('app')}: pid {answer.get('pid')}, {usage.get('total_tokens', 0)} tokens)",
        err=True,
    )


def show(result: Any) -> None:
    """An app's answer, readably: an answer with its sources, ranked items, a
    summary; anything else as JSON."""
    out = console()
    if isinstance(result, dict) and isinstance(result.get("answer"), str):
        out.print(result["answer"], markup=False)
        for c in result.get("citations") or []:
            out.print(f"  [{c.get('id')}] {c.get('title')} (score {c.get('score')})", markup=False)
    elif isinstance(result, dict) and isinstance(result.get("items"), list):
        table = Table(box=None, header_style="bold", pad_edge=False)
        for title in ("#", "ID", "TITLE", "SCORE", "WHY"):
            table.add_column(title, overflow="fold")
        for n, item in enumerate(result["items"], 1):
            table.add_row(
                str(n),
                Text(str(item.get("id"))),
                Text(str(item.get("title"))),
                cell(item.get("score")),
                Text(str(item.get("reason") or "")),
            )
        out.print(table)
    elif isinstance(result, dict) and isinstance(result.get("summary"), str):
        out.print(result["summary"], markup=False)
    else:
        typer.echo(json.dumps(result, indent=2))
