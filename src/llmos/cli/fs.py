"""`llmos fs`: your files in the kernel's storage — list, put, get, delete,
versions, rollback, search."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console, fail
from llmos.params import MAX_SEARCH_LIMIT

PathArg = Annotated[str, typer.Argument(help="The file's path in storage, e.g. notes/todo.md.")]


def build() -> typer.Typer:
    app = typer.Typer(
        name="fs",
        help="Your files in the kernel's storage: versioned and searchable.",
        no_args_is_help=True,
    )
    app.command("ls")(ls)
    app.command("put")(put)
    app.command("get")(get)
    app.command("stat")(stat)
    app.command("rm")(rm)
    app.command("versions")(versions)
    app.command("rollback")(rollback)
    app.command("search")(search)
    return app


def ls(
    prefix: Annotated[
        str, typer.Argument(help="Only paths that start with this.", show_default=False)
    ] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List your files (under PREFIX)."""
    with connect(url, token) as client:
        files = client.fs_list(prefix)
    if not files:
        console().print("no files" + (f" under {prefix!r}" if prefix else ""), markup=False)
        return
    table = _table(("PATH", "left"), ("SIZE", "right"), ("VER", "right"), ("UPDATED", "right"))
    for f in files:
        table.add_row(
            Text(str(f.get("path"))),
            cell(f.get("size")),
            cell(f.get("version")),
            age(f.get("updated_at")),
        )
    console().print(table)


def put(
    local: Annotated[str, typer.Argument(help="A local file to upload; '-' reads stdin.")],
    path: Annotated[
        str | None,
        typer.Argument(help="Where to store it. Default: LOCAL's file name.", show_default=False),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload a file (a new version if PATH exists)."""
    if path is None:
        if local == "-":
            fail("give a PATH to store stdin at", 2)
        path = Path(local).name
    try:
        data = sys.stdin.buffer.read() if local == "-" else Path(local).read_bytes()
    except OSError as exc:
        fail(f"cannot read {local}: {exc.strerror or exc}")
    with connect(url, token) as client:
        info = client.fs_write(path, data)
    typer.echo(f"{info['path']}: version {info['version']}, {info['size']} bytes")


def get(
    path: PathArg,
    version: Annotated[
        int | None, typer.Option(help="An older version (see `versions`).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file, not stdout.", show_default=False),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print a file's content (or write it to a local file with -o)."""
    with connect(url, token) as client:
        data = client.fs_read(path, version)
    if out is None:
        typer.echo(data, nl=False)
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")


def stat(path: PathArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Show a file's size, version, hash and times."""
    with connect(url, token) as client:
        info = client.fs_stat(path)
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in info.items():
        shown = age(value) + " ago" if key.endswith("_at") and value else cell(value)
        table.add_row(key.replace("_", " "), Text(shown))
    console().print(table)


def rm(path: PathArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete a file. Its history stays: `rollback` brings it back."""
    with connect(url, token) as client:
        info = client.fs_delete(path)
    typer.echo(f"deleted {info['path']} (version {info['version']} is the deletion)")


def versions(path: PathArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """List a file's kept versions, deletions included."""
    with connect(url, token) as client:
        rows: list[dict[str, Any]] = client.fs_versions(path)
    table = _table(("VER", "right"), ("SIZE", "right"), ("SHA256", "left"), ("AGE", "right"))
    for v in rows:
        sha = "(deleted)" if v.get("deleted") else str(v.get("sha256") or "-")[:12]
        table.add_row(cell(v.get("version")), cell(v.get("size")), sha, age(v.get("created_at")))
    console().print(table)


def rollback(
    path: PathArg,
    version: Annotated[int, typer.Argument(help="The version whose content to restore.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Restore an older version's content, as a new version (also undoes `rm`)."""
    with connect(url, token) as client:
        info = client.fs_rollback(path, version)
    typer.echo(f"{info['path']}: version {info['version']} has version {version}'s content")


def search(
    query: Annotated[str, typer.Argument(help="Words that must all appear; 'pre*' for prefixes.")],
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_SEARCH_LIMIT, help="Most results to show.")
    ] = 10,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Full-text search of your text files, best match first."""
    with connect(url, token) as client:
        hits = client.fs_search(query, limit)
    out = console()
    if not hits:
        out.print("no matches", markup=False)
        return
    for hit in hits:
        out.print(Text(f"{hit.get('path')}  (version {hit.get('version')})", style="bold"))
        snippet = " ".join(str(hit.get("snippet") or "").split())
        out.print(Text("  " + snippet))


def _table(*columns: tuple[str, str]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title, justify in columns:
        wrap = title == "PATH"  # fold long paths; keep numbers whole
        table.add_column(title, justify="right" if justify == "right" else "left", no_wrap=not wrap)
    return table
