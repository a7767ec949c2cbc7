"""`llmos run`, `logs`, `wait`, `suspend`, `resume`: programs the kernel runs as
processes (agents), their output and their exit status."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from llmos.cli._shared import EXIT_ERROR, TokenOption, UrlOption, connect, fail
from llmos.params import AGENT_CPU_S, AGENT_MEM_MB, DEFAULT_PRIORITY, MAX_PRIORITY
from llmos.sdk import ApiError, Client

EXIT_TIMEOUT = 124  # as timeout(1): the wait ended before the program did
EXIT_DETACHED = 130  # Ctrl-C while following: the program keeps running
POLL_S = 0.25
_WHY = {signal.SIGXCPU: "its CPU time limit"}

PidArg = Annotated[int, typer.Argument(help="The process (its llmos pid, as `llmos ps` shows).")]


def run(
    path: Annotated[Path, typer.Argument(help="The Python program to run.", show_default=False)],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Its arguments (after --).", show_default=False),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="A name for the process. Default: the file's name.")
    ] = None,
    priority: Annotated[
        int, typer.Option(help=f"0..{MAX_PRIORITY}; higher runs earlier under priority policies.")
    ] = DEFAULT_PRIORITY,
    budget: Annotated[
        int | None,
        typer.Option(help="Most LLM tokens (in + out) it may use; then 403.", show_default=False),
    ] = None,
    cpu: Annotated[
        float | None,
        typer.Option(help=f"CPU seconds it may use (default {AGENT_CPU_S}).", show_default=False),
    ] = None,
    mem: Annotated[
        int | None,
        typer.Option(help=f"Memory it may map, MiB (default {AGENT_MEM_MB}).", show_default=False),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Print its output until it ends; exit with its status."
        ),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run a Python program as an llmos process (an agent) and print its pid.

    It runs on the kernel's machine, as a separate OS process, with LLMOS_URL and its
    own process token in its environment, under CPU and memory limits; its stdout
    and stderr are kept (`llmos logs`). Example: llmos run agent.py -f -- "a task"."""
    if not path.is_file():
        fail(f"no such file: {path}", 2)
    with connect(url, token) as client:
        proc = client.run_agent(
            path.resolve(),
            *(args or []),
            name=name,
            priority=priority,
            token_budget=budget,
            cpu_s=cpu,
            mem_mb=mem,
        )
        pid = int(proc["pid"])
        if not follow:
            typer.echo(pid)
            typer.echo(
                f"started {proc['name']} as process {pid} (os pid {proc['os_pid']});"
                f" `llmos logs {pid} -f` follows it",
                err=True,
            )
            return
        _follow(client, pid, ("stdout", "stderr"))
        raise typer.Exit(_status(client.wait(pid), quiet=True))


def logs(
    pid: PidArg,
    stderr: Annotated[bool, typer.Option("--stderr", help="Its stderr, not its stdout.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the program ends.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option(min=0, help="Only the last N lines.", show_default=False)
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print a program's captured output."""
    stream = "stderr" if stderr else "stdout"
    with connect(url, token) as client:
        if follow:
            _follow(client, pid, (stream,), tail)
            return
        chunk = client.logs(pid, stream, tail=tail)
        if chunk["dropped"] or chunk["offset"]:
            typer.echo(f"[earlier output not shown: from byte {chunk['offset']}]", err=True)
        _echo(stream, chunk["text"])


def wait(
    pid: PidArg,
    timeout: Annotated[
        float | None,
        typer.Option(min=0, help="Give up after this many seconds (exit 124).", show_default=False),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Wait for a program to end; print how it ended and exit with its status."""
    with connect(url, token) as client:
        try:
            proc = client.wait(pid, timeout)
        except ApiError as exc:
            if exc.status != 408:
                raise
            typer.echo(f"process {pid} is still running after {timeout:g}s", err=True)
            raise typer.Exit(EXIT_TIMEOUT) from None
    raise typer.Exit(_status(proc, quiet=False))


def suspend(pid: PidArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Suspend a process: its requests stay queued, its program is stopped (SIGSTOP)."""
    with connect(url, token) as client:
        proc = client.suspend(pid)
    typer.echo(f"process {proc['pid']} ({proc['name']}) is {proc['state']}")


def resume(pid: PidArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Resume a suspended process: its requests run again, its program continues."""
    with connect(url, token) as client:
        proc = client.resume(pid)
    typer.echo(f"process {proc['pid']} ({proc['name']}) is {proc['state']}")


# -- helpers ----------------------------------------------------------------------------
def _echo(stream: str, text: str) -> None:
    if text:
        typer.echo(text, nl=False, err=stream == "stderr")


def _follow(client: Client, pid: int, streams: tuple[str, ...], tail: int | None = None) -> None:
    """Print the streams' output as it comes until the program has ended and every
    byte is printed. Ctrl-C detaches (the program keeps running)."""
    offsets: dict[str, int] = dict.fromkeys(streams, 0)
    if tail is not None:  # start from the last lines
        for stream in streams:
            chunk = client.logs(pid, stream, tail=tail)
            _echo(stream, chunk["text"])
            offsets[stream] = chunk["next_offset"]
    try:
        while True:
            finished, quiet = True, True
            for stream in streams:
                chunk = client.logs(pid, stream, offset=offsets[stream])
                _echo(stream, chunk["text"])
                quiet = quiet and not chunk["text"]
                offsets[stream] = chunk["next_offset"]
                finished = (
                    finished and not chunk["running"] and chunk["next_offset"] >= chunk["end"]
                )
            if finished:
                return
            if quiet:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        typer.echo(
            f"\ndetached: process {pid} keeps running (`llmos kill {pid}` ends it)", err=True
        )
        raise typer.Exit(EXIT_DETACHED) from None


def _status(proc: dict[str, Any], quiet: bool) -> int:
    """The shell's exit status for how the program ended; a summary line on stderr."""
    code = proc.get("exit_code")
    if code is None:
        detail, status = "no exit status", EXIT_ERROR
    elif code >= 0:
        detail, status = f"status {code}", code
    else:
        detail, status = _signal_name(-code), 128 - code
    ended = "was killed" if proc.get("state") == "killed" else "exited"
    cost = (
        f"cpu {proc.get('cpu_s') or 0:.2f}s, wall {proc.get('wall_s') or 0:.1f}s,"
        f" tokens {proc.get('tokens_in', 0)} in / {proc.get('tokens_out', 0)} out"
    )
    if not quiet or status:
        print(f"process {proc['pid']} ({proc['name']}) {ended}: {detail}; {cost}", file=sys.stderr)
    return status


def _signal_name(number: int) -> str:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    return sig.name + (f" ({_WHY[sig]})" if sig in _WHY else "")


def register(app: typer.Typer) -> None:
    """Add `run`, `logs`, `wait`, `suspend` and `resume` to the `llmos` command."""
    app.command("run")(run)
    app.command("logs")(logs)
    app.command("wait")(wait)
    app.command("suspend")(suspend)
    app.command("resume")(resume)
