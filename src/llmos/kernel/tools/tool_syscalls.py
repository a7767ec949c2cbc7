"""The `tool.*` syscalls: list the tools, call one. A call is checked against the
tool's JSON schema, then runs with the caller's rights (built-ins make their
syscalls as the caller). Calls run concurrently: nothing is held across one.

syscalls.py gathers TOOL_SYSCALLS into the syscall table."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, Killed
from llmos.kernel.sysdefs import ALL, READERS, Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


async def _tool_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return [tool.spec() for tool in k.tools.listing()]


async def _tool_call(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    if c.pid is not None:  # a killed or exited process's token calls nothing
        proc = k.procs.find(c.pid)
        if proc is None or not proc.state.alive:
            raise Killed(f"process {c.pid} has ended", param="pid")
    name = a.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("name must be the tool's name (a string)", param="name")
    return await k.tools.call(k, c, name, _arguments(a.get("arguments")))


def _arguments(value: Any) -> Any:
    """The arguments object; also taken as a JSON string, as OpenAI's tool calls
    carry it. The registry checks it against the tool's schema."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"arguments is not valid JSON: {exc.msg}", param="arguments"
            ) from None
    return value


TOOL_SYSCALLS = (
    Syscall(
        "tool.list", _tool_list, READERS, "the tools: name, description, JSON-schema parameters"
    ),
    Syscall(
        "tool.call",
        _tool_call,
        ALL,
        "call a tool {name, arguments}; arguments are checked against its schema",
    ),
)
