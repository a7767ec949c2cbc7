"""The agent syscalls: `proc.exec` runs a program as a process (agents.py),
`proc.wait`, `proc.logs` and `proc.signal` (suspend, resume, term, kill) follow
and steer it. Thin handlers: they check arguments and rights, the agent manager
does the work.

Who may run a program: admins; users only when the kernel was started with
`user_agents` (the program runs as the kernel's OS user, which can read
LLMOS_HOME: its database, keys and admin token); never a viewer or a process.

syscalls.py gathers AGENT_SYSCALLS into the syscall table."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.errors import Forbidden, InvalidRequest, Killed
from llmos.kernel import access
from llmos.kernel.agents import AgentSpec
from llmos.kernel.sysdefs import ALL, HUMANS, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import (
    AGENT_CPU_S,
    AGENT_LOG_READ_BYTES,
    AGENT_MEM_MB,
    DEFAULT_PRIORITY,
    MAX_AGENT_ARG_CHARS,
    MAX_AGENT_ARGS,
    MAX_AGENT_CPU_S,
    MAX_AGENT_ENV,
    MAX_AGENT_MEM_MB,
    MAX_INT,
    MAX_NAME_LEN,
    MAX_PATH_BYTES,
    MAX_WAIT_S,
    MIN_AGENT_MEM_MB,
)

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

SIGNALS = ("suspend", "resume", "term", "kill")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_TAIL_LINES = 100_000


# -- argument checks --------------------------------------------------------------------
def _text(value: Any, param: str, limit: int) -> str:
    """A string that can reach the OS: no NUL, valid UTF-8, at most `limit` chars."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{param} must be a string", param=param)
    if len(value) > limit or "\x00" in value:
        raise InvalidRequest(f"{param} must be at most {limit} characters, no NUL", param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{param} is not valid UTF-8", param=param) from None
    return value


def _number(a: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = a.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be a number from {low:g} to {high:g}", param=key)
    return float(value)


def _opt_int(a: dict[str, Any], key: str, low: int = 0, high: int = MAX_INT) -> int | None:
    value = a.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be an integer from {low} to {high}", param=key)
    return value


def _pid(a: dict[str, Any]) -> int:
    pid = _opt_int(a, "pid")
    if pid is None:
        raise InvalidRequest("pid is required (an integer)", param="pid")
    return pid


def _program(value: Any) -> str:
    path = _text(value, "path", MAX_PATH_BYTES)
    if not path:
        raise InvalidRequest("path is required: the program to run", param="path")
    if not os.path.isabs(path):
        raise InvalidRequest(
            f"path must be absolute (on the kernel's machine): {path}", param="path"
        )
    p = Path(path)
    if not p.exists():
        raise InvalidRequest(f"no such file: {path}", param="path")
    if not p.is_file():
        raise InvalidRequest(f"not a regular file: {path}", param="path")
    if not os.access(p, os.R_OK):
        raise InvalidRequest(f"the kernel cannot read {path}", param="path")
    return path


def _args(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_AGENT_ARGS:
        raise InvalidRequest(
            f"args must be a list of at most {MAX_AGENT_ARGS} strings", param="args"
        )
    return tuple(_text(v, f"args[{i}]", MAX_AGENT_ARG_CHARS) for i, v in enumerate(value))


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_AGENT_ENV:
        raise InvalidRequest(f"env must map at most {MAX_AGENT_ENV} names to strings", param="env")
    for name in value:
        if not ENV_NAME.match(name):
            raise InvalidRequest(f"env: {name!r} is not a variable name", param="env")
    return {n: _text(v, f"env.{n}", MAX_AGENT_ARG_CHARS) for n, v in value.items()}


def _spec(a: dict[str, Any]) -> AgentSpec:
    cpu = _number(a, "cpu_s", AGENT_CPU_S, 1e-3, MAX_AGENT_CPU_S)
    mem = _opt_int(a, "mem_mb", MIN_AGENT_MEM_MB, MAX_AGENT_MEM_MB)
    return AgentSpec(
        path=_program(a.get("path")),
        args=_args(a.get("args")),
        cpu_s=math.ceil(cpu),
        mem_mb=AGENT_MEM_MB if mem is None else mem,
        env=_env(a.get("env")),
    )


# -- handlers ---------------------------------------------------------------------------
async def _proc_exec(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    from llmos.kernel.syscalls import TABLE  # the table is built from this module

    if c.role == "user" and not k.settings.user_agents:
        raise Forbidden(
            "only admins may run programs on this kernel (it runs them as its own OS user;"
            " start it with --user-agents to let users)",
            param="authorization",
        )
    spec = _spec(a)
    name = a.get("name")
    if name is None:
        name = Path(spec.path).stem[:MAX_NAME_LEN] or "agent"
    if not isinstance(name, str):
        raise InvalidRequest("name must be a string", param="name")
    priority = _opt_int(a, "priority", -MAX_INT)
    k.agents.admit()
    caps = access.derive_capability(c, a.get("capabilities"), TABLE)
    proc, token = k.spawn(
        c,
        name,
        DEFAULT_PRIORITY if priority is None else priority,
        max_concurrent=_opt_int(a, "max_concurrent", 1),
        token_budget=_opt_int(a, "token_budget", 1),
        caps=caps,
    )
    k.agents.launch(proc, token, spec)
    return {**proc.to_dict(), "capabilities": caps.to_dict()}


async def _proc_wait(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    proc = k.visible(c, _pid(a))
    timeout = _number(a, "timeout_s", MAX_WAIT_S, 0, MAX_WAIT_S)
    return (await k.agents.wait(proc, timeout)).to_dict()


async def _proc_logs(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    proc = k.visible(c, _pid(a))
    if c.role == "viewer" and proc.owner != c.owner:
        raise Forbidden("a viewer sees other owners' processes, not their output", param="pid")
    stream = a.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise InvalidRequest("stream must be 'stdout' or 'stderr'", param="stream")
    offset = _opt_int(a, "offset")
    tail = _opt_int(a, "tail", 0, MAX_TAIL_LINES)
    if offset is not None and tail is not None:
        raise InvalidRequest(
            "give offset (to follow) or tail (the last lines), not both", param="tail"
        )
    size = _opt_int(a, "max_bytes", 1, AGENT_LOG_READ_BYTES) or AGENT_LOG_READ_BYTES
    chunk = k.agents.logs(proc, stream, offset, tail, size)
    running = proc.pid in k.agents.running  # its program may still write
    return {"pid": proc.pid, "stream": stream, "running": running, **chunk.to_dict()}


async def _proc_signal(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    pid = _pid(a)
    sig = a.get("signal")
    if sig not in SIGNALS:
        raise InvalidRequest(f"signal must be one of {', '.join(SIGNALS)}", param="signal")
    proc = k.visible(c, pid)
    access.require_change(k, c, proc)
    if sig == "kill" or (sig == "term" and not proc.state.alive):
        return k.kill(c, pid).to_dict()
    if not proc.state.alive:
        raise Killed(f"process {pid} has ended ({proc.state.name.lower()})", param="pid")
    if sig == "suspend":
        k.agents.suspend(proc)
    elif sig == "resume":
        k.agents.resume(proc)
    elif not k.agents.terminate(proc):  # term, and it runs no program
        return k.kill(c, pid).to_dict()
    return proc.to_dict()


AGENT_SYSCALLS = (
    Syscall(
        "proc.exec",
        _proc_exec,
        HUMANS,
        "run a program as a process (path, args, name, priority, token_budget, cpu_s, mem_mb,"
        " capabilities, env); it gets LLMOS_URL and its own token",
        True,
    ),
    Syscall(
        "proc.wait",
        _proc_wait,
        READERS,
        "wait (timeout_s) for a process's program to end: its exit code and accounting",
    ),
    Syscall(
        "proc.logs",
        _proc_logs,
        READERS,
        "a program's captured output (stream stdout|stderr; offset to follow, or tail lines)",
    ),
    Syscall(
        "proc.signal",
        _proc_signal,
        ALL,
        "suspend (parks its requests, stops its program), resume, term or kill a process",
        True,
    ),
)
