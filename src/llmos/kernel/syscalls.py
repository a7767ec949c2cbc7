"""The syscall table: the only way into the kernel. Each handler validates its
arguments and calls the subsystem that does the work (cf. xv6's syscall.c)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, NotFound
from llmos.kernel import access, capabilities, sysinfo
from llmos.kernel.request import Request
from llmos.kernel.sysdefs import ADMINS, ALL, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import DEFAULT_PRIORITY, MAX_INT

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


def _int(args: dict[str, Any], key: str, default: int | None = None) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
        raise InvalidRequest(f"{key} must be an integer (64-bit)", param=key)
    return value


def _opt_int(args: dict[str, Any], key: str) -> int | None:
    return None if args.get(key) is None else _int(args, key)


SCHED_KNOBS = {
    "quantum": int,
    "aging_s": float,
    "mlfq_levels": int,
    "mlfq_boost_s": float,
    "preempt_margin": int,
    "sjf_aging_tokens_per_s": float,
}


async def _sched_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.sched_info()


async def _sched_set(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    name = a.get("policy", k.scheduler.policy_name)
    if not isinstance(name, str):
        raise InvalidRequest("policy must be a string", param="policy")
    changes: dict[str, Any] = {}
    for key, kind in SCHED_KNOBS.items():
        value = a.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{key} must be a number", param=key)
        if kind is int and not isinstance(value, int):
            raise InvalidRequest(f"{key} must be an integer", param=key)
        changes[key] = kind(value)
    weights = a.get("weights")
    if weights is not None:
        if not isinstance(weights, dict) or not all(
            isinstance(o, str) and isinstance(w, int | float) and not isinstance(w, bool)
            for o, w in weights.items()
        ):
            raise InvalidRequest("weights must map owner names to numbers", param="weights")
        changes["fair_weights"] = {o: float(w) for o, w in weights.items()}
    return k.set_policy(name, changes)


async def _llm_chat(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.submit(c, "chat", a)


async def _llm_complete(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await k.submit(c, "completion", a)


async def _proc_spawn(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    name = a.get("name", "process")
    if not isinstance(name, str):
        raise InvalidRequest("name must be a string", param="name")
    shared = a.get("memory_shared", False)
    if not isinstance(shared, bool):
        raise InvalidRequest("memory_shared must be true or false", param="memory_shared")
    default = DEFAULT_PRIORITY if c.pid is None else k.procs.get(c.pid).priority
    caps = access.derive_capability(c, a.get("capabilities"), TABLE)
    proc, token = k.spawn(
        c,
        name,
        _int(a, "priority", default),
        max_concurrent=_opt_int(a, "max_concurrent"),
        token_budget=_opt_int(a, "token_budget"),
        memory_shared=shared,
        caps=caps,
    )
    return {**proc.to_dict(), "token": token, "capabilities": caps.to_dict()}


async def _proc_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return [p.to_dict() for p in k.list_processes(c)]


async def _proc_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    proc = k.visible(c, _int(a, "pid"))
    return {**proc.to_dict(), "perception": k.perception.usage(proc.pid)}


async def _proc_kill(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.kill(c, _int(a, "pid")).to_dict()


async def _proc_renice(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.renice(c, _int(a, "pid"), _int(a, "priority")).to_dict()


async def _sys_info(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return sysinfo.info(k)


async def _sys_devices(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await sysinfo.device_infos(k)


async def _sys_models(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return [
        {
            "id": d.model,
            "device": d.name,
            "context_length": d.context_length,
            "capabilities": capabilities.ordered(d.capabilities),
        }
        for d in k.devices
    ]


def _more() -> tuple[Syscall, ...]:
    """Syscalls whose handlers live beside their subsystem."""
    from llmos.kernel.admin_syscalls import ADMIN_SYSCALLS
    from llmos.kernel.agent_syscalls import AGENT_SYSCALLS
    from llmos.kernel.alert_syscalls import ALERT_SYSCALLS
    from llmos.kernel.ask import ASK_SYSCALLS
    from llmos.kernel.backup_syscalls import BACKUP_SYSCALLS
    from llmos.kernel.batch_syscalls import BATCH_SYSCALLS
    from llmos.kernel.cluster_syscalls import CLUSTER_SYSCALLS
    from llmos.kernel.exit_syscalls import EXIT_SYSCALLS
    from llmos.kernel.fs_syscalls import FS_SYSCALLS
    from llmos.kernel.job_syscalls import JOB_SYSCALLS
    from llmos.kernel.key_syscalls import KEY_SYSCALLS
    from llmos.kernel.learn_syscalls import LEARN_SYSCALLS
    from llmos.kernel.media_syscalls import MEDIA_SYSCALLS
    from llmos.kernel.mem_syscalls import MEM_SYSCALLS
    from llmos.kernel.privacy import PRIVACY_SYSCALLS
    from llmos.kernel.sysmon import SYSMON_SYSCALLS
    from llmos.kernel.toolloop import TOOL_LOOP_SYSCALLS
    from llmos.kernel.tools.mcp_syscalls import MCP_SYSCALLS
    from llmos.kernel.tools.tool_syscalls import TOOL_SYSCALLS
    from llmos.kernel.tune_syscalls import TUNE_SYSCALLS

    return (
        *MEM_SYSCALLS,
        *FS_SYSCALLS,
        *ADMIN_SYSCALLS,
        *JOB_SYSCALLS,
        *BATCH_SYSCALLS,
        *KEY_SYSCALLS,
        *PRIVACY_SYSCALLS,
        *SYSMON_SYSCALLS,
        *ALERT_SYSCALLS,
        *BACKUP_SYSCALLS,
        *ASK_SYSCALLS,
        *LEARN_SYSCALLS,
        *TUNE_SYSCALLS,
        *AGENT_SYSCALLS,
        *EXIT_SYSCALLS,
        *TOOL_LOOP_SYSCALLS,
        *MCP_SYSCALLS,
        *TOOL_SYSCALLS,
        *MEDIA_SYSCALLS,
        *CLUSTER_SYSCALLS,
    )


TABLE: dict[str, Syscall] = {
    s.name: s
    for s in (
        *_more(),
        Syscall("llm.chat", _llm_chat, ALL, "chat completion: messages -> streamed reply"),
        Syscall("llm.complete", _llm_complete, ALL, "text completion: prompt -> continuation"),
        Syscall(
            "proc.spawn",
            _proc_spawn,
            ALL,
            "start a process (a process: a child no wider than itself); returns pid, token",
            True,
        ),
        Syscall("proc.list", _proc_list, READERS, "processes the caller may see"),
        Syscall("proc.get", _proc_get, READERS, "one process"),
        Syscall("proc.kill", _proc_kill, ALL, "kill a process and its requests", True),
        Syscall("proc.renice", _proc_renice, ALL, "change a process's priority", True),
        Syscall("sys.info", _sys_info, READERS, "kernel version, uptime, load"),
        Syscall("sys.devices", _sys_devices, READERS, "devices, slots, in-flight counters"),
        Syscall("sys.models", _sys_models, READERS, "models served"),
        Syscall("sched.get", _sched_get, READERS, "scheduling policy, knobs and switch counters"),
        Syscall("sched.set", _sched_set, ADMINS, "switch policy or knobs at run time", True),
    )
}


async def dispatch(k: Kernel, name: str, caller: Caller, args: dict[str, Any]) -> Any:
    call = TABLE.get(name)
    if call is None:
        raise NotFound(f"no syscall named {name!r}", param="syscall")
    try:
        access.gate(call, caller)
        result = await call.handler(k, caller, args)
    except Exception as exc:
        access.audit_outcome(k, call, caller, args, exc)
        raise
    access.audit_outcome(k, call, caller, args, None)
    return result


async def call_json(k: Kernel, name: str, caller: Caller, args: dict[str, Any]) -> Any:
    """A syscall whose result is plain JSON: an LLM request is run to its end and
    answered as {text, finish_reason, usage} (for generic front ends: the
    /v1/syscalls route, the MCP server, the shell)."""
    result = await k.call(name, caller, args)
    if not isinstance(result, Request):
        return result
    try:
        done = await result.outcome()
    except asyncio.CancelledError:
        k.cancel(result)
        raise
    if done.error is not None:
        raise done.error
    return {
        "text": result.text,
        "finish_reason": done.reason,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.output_tokens,
            "total_tokens": result.prompt_tokens + result.output_tokens,
        },
        "pid": result.pid,
        **({"media": result.media} if result.media else {}),  # how image/audio parts went
    }


def describe(caller: Caller) -> list[dict[str, Any]]:
    """The syscall table as the caller sees it: name, doc, and whether they may."""
    return [
        {
            "name": s.name,
            "doc": s.doc,
            "roles": sorted(s.roles),
            "allowed": caller.role in s.roles
            and (caller.caps is None or caller.caps.allows(s.name)),
        }
        for s in sorted(TABLE.values(), key=lambda s: s.name)
    ]
