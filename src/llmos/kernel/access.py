"""The access manager: one gate every syscall passes through (role, capability),
the resource checks handlers call (processes, files, memories: owner, shares,
capability), and the audit of privileged calls and of every denial.

Roles: admin — everything; user — their own resources and what is shared with
them; viewer — reads only: every process's metadata and the system's state, their
own and shared files and memories; process — a token with a capability fixed at
spawn, acting for its owner inside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from llmos.errors import Forbidden, Hidden, InvalidRequest, LlmosError, NotFound, Unauthorized
from llmos.kernel.capability import Capability
from llmos.kernel.memindex import Scope
from llmos.kernel.sysdefs import Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.process import Process

T = TypeVar("T")

AUDIT_KEYS = ("pid", "path", "owner", "name", "id", "user", "principal", "kind", "policy", "perm")


def gate(call: Syscall, caller: Caller) -> None:
    """May this caller make this syscall at all?"""
    if caller.role not in call.roles:
        raise Forbidden(f"role {caller.role!r} may not call {call.name}", param="authorization")
    if caller.caps is not None and not caller.caps.allows(call.name):
        raise Forbidden(
            f"this process's capability does not include {call.name}", param="capabilities"
        )


def is_denial(exc: BaseException) -> bool:
    return isinstance(exc, Forbidden | Hidden | Unauthorized)


def audit(
    k: Kernel, call: str, caller: Caller, args: dict[str, Any], outcome: str, reason: str = ""
) -> None:
    target = {key: args[key] for key in AUDIT_KEYS if key in args}
    k.audit.append(
        caller.owner, caller.role, caller.token_id, caller.pid, call, target, outcome, reason
    )


def audit_outcome(
    k: Kernel, call: Syscall, caller: Caller, args: dict[str, Any], exc: BaseException | None
) -> None:
    """Privileged calls always leave a row; any call that was denied does too."""
    if exc is None:
        if call.privileged:
            audit(k, call.name, caller, args, "allowed")
    elif is_denial(exc):
        reason = exc.message if isinstance(exc, LlmosError) else str(exc)
        audit(k, call.name, caller, args, "denied", reason)
    elif call.privileged:
        audit(k, call.name, caller, args, "failed", str(exc)[:200])


# -- capabilities -------------------------------------------------------------------
def process_rights(table: dict[str, Syscall]) -> Capability:
    """The widest capability a process may hold: every syscall open to processes."""
    return Capability(frozenset(n for n, s in table.items() if "process" in s.roles))


def derive_capability(caller: Caller, spec: Any, table: dict[str, Syscall]) -> Capability:
    """A new process's capability: from its spawner's rights, never wider."""
    parent = caller.caps if caller.caps is not None else process_rights(table)
    return parent.derive(spec, table)


# -- processes ----------------------------------------------------------------------
def may_see(k: Kernel, caller: Caller, proc: Process) -> bool:
    if caller.is_admin or caller.role == "viewer":
        return True
    if caller.role == "process":
        return caller.pid == proc.pid
    if caller.owner == proc.owner:
        return True
    return (
        k.shares.granted(caller.principals, "process", proc.owner, str(proc.pid), False) is not None
    )


def may_change(k: Kernel, caller: Caller, proc: Process) -> bool:
    if caller.is_admin or (caller.owner == proc.owner and caller.role != "viewer"):
        return caller.role != "process" or caller.pid == proc.pid
    return (
        k.shares.granted(caller.principals, "process", proc.owner, str(proc.pid), True) == "write"
    )


def require_change(k: Kernel, caller: Caller, proc: Process) -> None:
    if not may_change(k, caller, proc):
        raise Forbidden(f"you may see process {proc.pid} but not change it", param="pid")


# -- files --------------------------------------------------------------------------
def target_owner(caller: Caller, args: dict[str, Any]) -> str:
    owner = args.get("owner")
    if owner is None:
        return caller.owner
    if not isinstance(owner, str) or not owner:
        raise InvalidRequest("owner must be a user name", param="owner")
    return owner


def file_access(k: Kernel, caller: Caller, owner: str, path: str, write: bool) -> None:
    """Raise unless the caller may read (or write) `path` in `owner`'s namespace.
    No right at all is a 404 (the file's existence must not leak); read-only is 403."""
    if caller.role == "process":
        if owner != caller.owner:
            raise Hidden(f"no file {path!r}", param="path")
        if caller.caps is not None and not caller.caps.allows_path(path, write):
            raise Forbidden(
                f"this process's capability does not allow {'writing' if write else 'reading'}"
                f" {path!r}",
                param="path",
            )
        return
    if caller.is_admin or owner == caller.owner:
        return
    granted = k.shares.granted(caller.principals, "file", owner, path, write)
    if granted is None:
        raise Hidden(f"no file {path!r}", param="path")
    if write and granted != "write":
        raise Forbidden(f"{owner}'s file {path!r} is shared with you read-only", param="path")


def may_read_file(k: Kernel, caller: Caller, owner: str, path: str) -> bool:
    try:
        file_access(k, caller, owner, path, write=False)
    except (Hidden, Forbidden):
        return False
    return True


# -- memories -----------------------------------------------------------------------
def memory_access(
    k: Kernel, caller: Caller, args: dict[str, Any], write: bool, mid: int | None = None
) -> Scope:
    """The memory scope a call works in. A process: its own memories (and its
    owner's shared ones if granted), within its capability. A user: their
    namespace, or another owner's when shared (all of it, '*', or that memory)."""
    if caller.role == "process":
        if caller.caps is not None and not caller.caps.allows_memory(write):
            raise Forbidden(
                f"this process's capability does not allow {'writing' if write else 'reading'}"
                " memories",
                param="capabilities.memory",
            )
        if target_owner(caller, args) != caller.owner:
            raise Hidden("no such memory", param="owner")
        assert caller.pid is not None
        proc = k.procs.get(caller.pid)
        return Scope(caller.owner, caller.pid, shared=proc.memory_shared)
    owner = target_owner(caller, args)
    if caller.is_admin or owner == caller.owner:
        return Scope(owner)
    resource = "*" if mid is None else str(mid)
    granted = k.shares.granted(caller.principals, "memory", owner, resource, write)
    if granted is None:
        raise Hidden(
            f"no memory with id {mid}"
            if mid is not None
            else f"no memories of {owner!r} shared with you",
            param="id" if mid is not None else "owner",
        )
    if write and granted != "write":
        raise Forbidden(f"{owner}'s memories are shared with you read-only", param="owner")
    return Scope(owner)


def no_wider_than(
    parent: Process, priority: int, token_budget: int | None, memory_shared: bool
) -> None:
    """A process spawning a child: the child's quotas stay inside the parent's."""
    if priority > parent.priority:
        raise Forbidden(
            f"a child may not run above its parent's priority {parent.priority}",
            param="priority",
        )
    if memory_shared and not parent.memory_shared:
        raise Forbidden("a child may not share memories its parent may not", param="memory_shared")
    if parent.token_budget is not None:
        left = parent.token_budget - parent.tokens_in - parent.tokens_out
        if token_budget is None or token_budget > left:
            raise Forbidden(
                f"a child's token_budget must fit in its parent's remaining {max(left, 0)}",
                param="token_budget",
            )


def on_memory(k: Kernel, caller: Caller, mid: int, op: Callable[[], T]) -> T:
    """Run a memory operation; a process that misses a memory of its owner's (outside
    its own scope) is denied, audited as such — the 404 reads the same. Checked only
    on the miss, so the hit path reads the memory once."""
    try:
        return op()
    except NotFound:
        if caller.role == "process" and _exists(k, Scope(caller.owner), mid):
            raise Hidden(f"no memory with id {mid}", param="id") from None
        raise


def _exists(k: Kernel, scope: Scope, mid: int) -> bool:
    try:
        k.memory.get(scope, mid)
    except NotFound:
        return False
    return True
