"""The OS side of an agent: a child process of the kernel, started under resource
limits in its own session, its output pumped, reaped with its resource usage.

- `start` runs `python path args` through a tiny launcher (`python -S -c`) that sets
  RLIMIT_CPU (SIGXCPU at the limit, SIGKILL a second later), RLIMIT_AS and no core
  dumps, then execs the interpreter, so the program runs exactly as it would from a
  shell, under them. No `preexec_fn`: the kernel has threads, and forking one
  that runs Python code in the child is not safe.
- `reaped` resolves when the child exits, with its wait status and `wait4`
  resource usage (its own CPU time and that of the children it waited for), via a
  pidfd on Linux, a thread elsewhere. Nothing else reaps these children.
- `signal_group` signals the child's process group (its children too) — only while
  the child is not reaped: Linux never hands out a pid that is still some group's
  id, so until then the group cannot be a stranger's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from llmos.kernel.agentlog import LogSink

log = logging.getLogger(__name__)

LAUNCHER = """\
import os, resource, sys
cpu, mem = int(sys.argv[1]), int(sys.argv[2])
for which, soft, hard in (
    (resource.RLIMIT_CORE, 0, 0),
    (resource.RLIMIT_CPU, cpu, cpu + 1),
    (resource.RLIMIT_AS, mem, mem),
):
    cap = resource.getrlimit(which)[1]
    if cap != resource.RLIM_INFINITY:
        soft, hard = min(soft, cap), min(hard, cap)
    resource.setrlimit(which, (soft, hard))
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""

Exit = tuple[int | None, Any]  # wait status and rusage; (None, None): reaped elsewhere


def start(
    argv: list[str], cpu_s: int, mem_mb: int, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """`python *argv` under the limits, in a new session; stdout/stderr are pipes."""
    return subprocess.Popen(
        [sys.executable, "-S", "-c", LAUNCHER, str(cpu_s), str(mem_mb << 20), *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own session and process group
    )


def signal_group(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the child's process group, unless the child has been reaped."""
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def reaped_exit(child: subprocess.Popen[bytes], status: int | None) -> int | None:
    """Record a reaped child's exit code (-N: signal N) and kill what it left in
    its group (the group id cannot have been reused: its members still hold it)."""
    code = None if status is None else os.waitstatus_to_exitcode(status)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.returncode = -1 if code is None else code  # from now on: signal no more
    return code


async def pump(pipe: IO[bytes], sink: LogSink) -> None:
    """Copy a pipe into its log until every writer has closed it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while chunk := await reader.read(1 << 16):
            sink.write(chunk)
    finally:
        transport.close()
        sink.close()


def reaped(pid: int) -> asyncio.Future[Exit]:
    """Resolves when child `pid` has exited, with its status and resource usage."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Exit] = loop.create_future()

    def reap(flags: int) -> Exit | None:
        try:
            got, status, usage = os.wait4(pid, flags)
        except ChildProcessError:
            return (None, None)
        return (status, usage) if got else None

    def settle(result: Exit) -> None:
        if not done.done():
            done.set_result(result)

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (not Linux, or an old one): a thread
        threading.Thread(
            target=lambda: _call_soon(loop, settle, reap(0) or (None, None)),
            name=f"reap-{pid}",
            daemon=True,
        ).start()
        return done

    def readable() -> None:
        result = reap(os.WNOHANG)
        if result is not None:
            loop.remove_reader(fd)
            os.close(fd)
            settle(result)

    loop.add_reader(fd, readable)
    return done


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[Exit], None], arg: Exit) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(fn, arg)


def cpu_seconds(sampler: Any) -> float | None:
    """A running child's CPU time so far (its reaped children's included)."""
    try:
        t = sampler.cpu_times()
    except psutil.Error:
        return None
    return round(float(t.user + t.system + t.children_user + t.children_system), 3)


def kill_orphan(os_pid: int, started_at: float, command: str | None) -> None:
    """Kill a program a crashed kernel left running, if that pid is still it:
    started within seconds of `started_at` and running `command`'s file."""
    try:
        proc = psutil.Process(os_pid)
        same = abs(proc.create_time() - started_at) < 5 and (
            command is None or shlex.split(command)[0] in proc.cmdline()
        )
    except (psutil.Error, ValueError):
        return
    if same:
        log.warning("killing os process %d, an agent left by an earlier run", os_pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os_pid, signal.SIGKILL)
