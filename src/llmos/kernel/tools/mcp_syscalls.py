"""The `mcp.*` syscalls: attach, list, restart and detach MCP servers (mcp_servers.py).
Attaching runs a command on the host as the kernel's OS user: an admin's act, audited.

syscalls.py gathers MCP_SYSCALLS into the syscall table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.kernel.sysdefs import ADMINS, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.kernel.tools.mcp_servers import spec_of

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


ADMIN_ONLY = ("args", "env", "error")  # may carry secrets: keys in args, a stderr tail


async def _mcp_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    servers = k.mcp.listing()
    if c.is_admin:
        return servers
    return [{key: v for key, v in s.items() if key not in ADMIN_ONLY} for s in servers]


async def _mcp_add(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    spec = spec_of(a.get("name"), a.get("command"), a.get("args"), a.get("env"))
    return await k.mcp.add(spec, c.owner)


async def _mcp_remove(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.mcp.remove(a.get("name"))


async def _mcp_restart(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.mcp.restart(a.get("name"))


MCP_SYSCALLS = (
    Syscall(
        "mcp.list",
        _mcp_list,
        READERS,
        "attached MCP servers: command, state, tools (args, env names, errors: admins)",
    ),
    Syscall(
        "mcp.add",
        _mcp_add,
        ADMINS,
        "attach an MCP server {name, command, args, env} (run as the kernel's OS user);"
        " its tools become mcp.<name>.<tool>",
        True,
    ),
    Syscall(
        "mcp.remove", _mcp_remove, ADMINS, "detach an MCP server: stop it, drop its tools", True
    ),
    Syscall(
        "mcp.restart",
        _mcp_restart,
        ADMINS,
        "restart an attached MCP server (mcp.json is read afresh)",
        True,
    ),
)
