"""The syscall table: the only way into the kernel. Each handler validates its
arguments and calls the subsystem that does the work (cf. xv6's syscall.c)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.errors import Forbidden, InvalidRequest, NotFound
from llmos.kernel.tokens import Caller
from llmos.params import DEFAULT_PRIORITY

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

Handler = Callable[["Kernel", Caller, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Syscall:
    name: str
    handler: Handler
    roles: frozenset[str]  # who may make it
    doc: str


ALL = frozenset({"admin", "user", "process"})
HUMANS = frozenset({"admin", "user"})


def _int(args: dict[str, Any], key: str, default: int | None = None) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{key} must be an integer", param=key)
    return value


async def _llm_chat(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.submit(c, "chat", a)


async def _llm_complete(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.submit(c, "completion", a)


async def _proc_spawn(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    name = a.get("name", "process")
    if not isinstance(name, str):
        raise InvalidRequest("name must be a string", param="name")
    proc, token = k.spawn(c, name, _int(a, "priority", DEFAULT_PRIORITY))
    return {**proc.to_dict(), "token": token}


async def _proc_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return [p.to_dict() for p in k.list_processes(c)]


async def _proc_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.visible(c, _int(a, "pid")).to_dict()


async def _proc_kill(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.kill(c, _int(a, "pid")).to_dict()


async def _sys_info(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.info()


async def _sys_devices(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.device_infos()


async def _sys_models(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return [
        {"id": d.model, "device": d.name, "context_length": d.context_length} for d in k.devices
    ]


TABLE: dict[str, Syscall] = {
    s.name: s
    for s in (
        Syscall("llm.chat", _llm_chat, ALL, "chat completion: messages -> streamed reply"),
        Syscall("llm.complete", _llm_complete, ALL, "text completion: prompt -> continuation"),
        Syscall("proc.spawn", _proc_spawn, HUMANS, "start a process; returns pid and token"),
        Syscall("proc.list", _proc_list, ALL, "processes the caller may see"),
        Syscall("proc.get", _proc_get, ALL, "one process"),
        Syscall("proc.kill", _proc_kill, ALL, "kill a process and its requests"),
        Syscall("sys.info", _sys_info, ALL, "kernel version, uptime, load"),
        Syscall("sys.devices", _sys_devices, ALL, "devices, slots, in-flight counters"),
        Syscall("sys.models", _sys_models, ALL, "models served"),
    )
}


async def dispatch(k: Kernel, name: str, caller: Caller, args: dict[str, Any]) -> Any:
    call = TABLE.get(name)
    if call is None:
        raise NotFound(f"no syscall named {name!r}", param="syscall")
    if caller.role not in call.roles:
        raise Forbidden(f"role {caller.role!r} may not call {name}", param="authorization")
    return await call.handler(k, caller, args)
