"""What every client command shares: the --url/--token options, one way to connect,
one way to fail, and value formatting for tables."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from llmos.sdk import ApiError, Client, KernelUnreachable

EXIT_ERROR = 1  # the kernel said no, or is not there
EXIT_USAGE = 2  # the command line itself is wrong (as click's usage errors)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Kernel URL. Default: $LLMOS_URL, else http://127.0.0.1:8710.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Bearer token. Default: $LLMOS_TOKEN, else $LLMOS_HOME/admin-token.",
        show_default=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def connect(url: str | None, token: str | None) -> Iterator[Client]:
    """A Client whose errors become one line on stderr and exit status 1."""
    try:
        with Client(url, token) as client:
            yield client
    except KernelUnreachable as exc:
        fail(
            f"cannot reach the llmos kernel at {exc.url} ({exc.reason}) — start it with `llmos up`"
        )
    except ApiError as exc:
        fail(exc.message)


def echo_stream(deltas: Iterable[str]) -> None:
    """Print a reply's deltas as they arrive, then end the line. A failure mid-reply
    ends the partial line first, so the error (from `connect`) is a line of its own."""
    started = False
    try:
        for delta in deltas:
            started = True
            typer.echo(delta, nl=False)
    except ApiError:
        if started:
            typer.echo()
        raise
    typer.echo()


def console() -> Console:
    """Made per command, so output goes to whatever stdout is at the time."""
    return Console(highlight=False)


def age(since: float | None, until: float | None = None) -> str:
    """`12s`, `5m`, `3h`, `2d`: the largest whole unit."""
    if not since:
        return "-"
    seconds = max(0.0, (until or time.time()) - since)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cell(value: object) -> str:
    """A table cell: lists joined, booleans as yes/no, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
