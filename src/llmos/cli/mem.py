"""`llmos mem`: long-term memory — add, search, list, show, forget."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console

IdArg = Annotated[int, typer.Argument(help="The memory's id (see `ls` or `search`).")]
TagOption = Annotated[
    str | None, typer.Option("--tag", help="Only memories with this tag.", show_default=False)
]


def build() -> typer.Typer:
    app = typer.Typer(
        name="mem",
        help="Long-term memory: facts kept by the kernel, searched by meaning and words.",
        no_args_is_help=True,
    )
    app.command("add")(add)
    app.command("search")(search)
    app.command("ls")(ls)
    app.command("get")(get)
    app.command("rm")(rm)
    return app


def add(
    text: Annotated[str, typer.Argument(help="What to remember; `-` reads it from stdin.")],
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", help="A tag (repeat for more).", show_default=False),
    ] = None,
    shared: Annotated[
        bool, typer.Option("--shared", help="With a process token: store it for the owner.")
    ] = False,
    pid: Annotated[
        int | None,
        typer.Option(help="Store it for this process of yours.", show_default=False),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Remember TEXT and print its id."""
    if text == "-":
        text = sys.stdin.read()
    with connect(url, token) as client:
        memory = client.mem_add(text, tags=tags, shared=shared, pid=pid)
    typer.echo(f"memory {memory['id']} ({_scope(memory)})")


def search(
    query: Annotated[str, typer.Argument(help="What to look for, in any words.")],
    k: Annotated[int, typer.Option("-k", help="Most results to show.")] = 5,
    tag: TagOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Memories closest to QUERY, best first."""
    with connect(url, token) as client:
        hits = client.mem_search(query, k, tag)
    if not hits:
        console().print("no matches", markup=False)
        return
    table = _table("SCORE")
    for m in hits:
        table.add_row(*_row(m), f"{float(m.get('score') or 0):.3f}")
    console().print(table)


def ls(
    tag: TagOption = None,
    limit: Annotated[int, typer.Option(help="Most memories to show.")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List your memories, newest first."""
    with connect(url, token) as client:
        memories = client.mem_list(tag, limit)
    if not memories:
        console().print("no memories" + (f" tagged {tag!r}" if tag else ""), markup=False)
        return
    table = _table("AGE")
    for m in memories:
        table.add_row(*_row(m), age(m.get("created_at")))
    console().print(table)


def get(mid: IdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Show one memory: text, tags, metadata, scope and times."""
    with connect(url, token) as client:
        memory = client.mem_get(mid)
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in memory.items():
        if key.endswith("_at") and value:
            shown = age(value) + " ago"
        elif isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        else:
            shown = cell(value)
        table.add_row(key.replace("_", " "), Text(shown))
    console().print(table)


def rm(mid: IdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Forget a memory."""
    with connect(url, token) as client:
        memory = client.mem_delete(mid)
    typer.echo(f"forgot memory {memory['id']}")


def _scope(memory: dict[str, Any]) -> str:
    pid = memory.get("pid")
    return f"process {pid}" if pid is not None else str(memory.get("scope") or "shared")


def _table(last: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("SCOPE", no_wrap=True)
    table.add_column("TAGS")
    table.add_column("TEXT", overflow="fold")
    table.add_column(last, justify="right", no_wrap=True)
    return table


def _row(memory: dict[str, Any]) -> tuple[str, str, Text, Text]:
    """ID, scope, tags, text: the user's text shown as is, never as markup."""
    text = " ".join(str(memory.get("text") or "").split())
    return cell(memory.get("id")), _scope(memory), Text(cell(memory.get("tags"))), Text(text)
