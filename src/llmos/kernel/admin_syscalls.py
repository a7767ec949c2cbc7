"""Syscalls of the access manager: users (`user.*`), API tokens (`token.*`),
shares (`share.*`), the audit log (`audit.*`) and `auth.whoami`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmos.errors import Forbidden, InvalidRequest
from llmos.kernel import access
from llmos.kernel.process import ProcState
from llmos.kernel.sysdefs import ADMINS, HUMANS, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.kernel.users import check_name
from llmos.params import MAX_INT

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

PEOPLE = frozenset({"admin", "user", "viewer"})  # a person, not a process
OVERSEERS = frozenset({"admin", "viewer"})
MAX_TOKEN_TTL = 10 * 365 * 86400


def _str(a: dict[str, Any], key: str) -> str:
    value = a.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key} must be a non-empty string", param=key)
    return value


def _pos_int(a: dict[str, Any], key: str, default: int | None = None) -> int:
    value = a.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise InvalidRequest(f"{key} must be a positive integer (64-bit)", param=key)
    return value


# -- users --------------------------------------------------------------------------
async def _user_add(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    user = k.users.add(a.get("name"), a.get("role", "user"), a.get("groups"))
    token, _ = k.tokens.issue(user["name"], user["role"], name="first token")
    return {**user, "token": token}


async def _user_update(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    name = check_name(a.get("name"), "name")
    if name == "admin" and a.get("role") not in (None, "admin"):
        raise Forbidden("the bootstrap admin keeps its role", param="role")
    return k.users.update(name, a.get("role"), a.get("groups"))


async def _user_rm(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    """Remove a user: their tokens stop working and their processes are killed;
    their files and memories stay (an admin can still reach them)."""
    name = check_name(a.get("name"), "name")
    if name == "admin" or name == c.owner:
        raise Forbidden(f"user {name!r} cannot be removed by this call", param="name")
    user = k.users.remove(name)
    k.tokens.revoke_owner(name)
    for proc in k.procs.list():
        if proc.owner == name and proc.state.alive:
            k.kill(c, proc.pid)
    return user


async def _user_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.users.listing()


# -- tokens -------------------------------------------------------------------------
async def _token_create(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    """A new token for the caller (or, by an admin, for any user), optionally
    named and expiring. It takes its user's role."""
    owner = c.owner if a.get("user") is None else check_name(a.get("user"), "user")
    if owner != c.owner and not c.is_admin:
        raise Forbidden("only an admin may create tokens for another user", param="user")
    role = k.users.role_of(owner)
    if role is None:
        if owner != c.owner:
            raise InvalidRequest(f"no user named {owner!r}", param="user")
        role = c.role
    name = a.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 100):
        raise InvalidRequest("name must be a string of at most 100 characters", param="name")
    expires_at = None
    if a.get("expires_in") is not None:
        ttl = a["expires_in"]
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not 0 < ttl <= MAX_TOKEN_TTL
        ):
            raise InvalidRequest(
                f"expires_in must be 1..{MAX_TOKEN_TTL} seconds", param="expires_in"
            )
        expires_at = time.time() + float(ttl)
    token, made = k.tokens.issue(owner, role, name=name, expires_at=expires_at)
    return {**k.tokens.get(made.token_id), "token": token}


async def _token_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    if a.get("user") is not None:
        owner = check_name(a.get("user"), "user")
        if owner != c.owner and not c.is_admin:
            raise Forbidden("only an admin may list another user's tokens", param="user")
        return k.tokens.listing(owner)
    return k.tokens.listing(None if c.is_admin else c.owner)


async def _token_revoke(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    token_id = _str(a, "id")
    info = k.tokens.get(token_id)
    if info["owner"] != c.owner and not c.is_admin:
        raise Forbidden(f"token {token_id} is not yours", param="id")
    return k.tokens.revoke(token_id)


# -- shares -------------------------------------------------------------------------
async def _share_add(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    """Share something of yours: a process (resource = pid), a file path prefix,
    or memories (resource = a memory id, or '*' for all of them)."""
    kind = a.get("kind")
    owner = access.target_owner(c, a)
    if owner != c.owner and not c.is_admin:
        raise Forbidden("you may only share your own resources", param="owner")
    resource = a.get("resource")
    if kind == "process":
        pid = _pos_int(a, "resource")
        proc = k.visible(c, pid)
        if proc.owner != owner:
            raise Forbidden(f"process {pid} is not {owner}'s", param="resource")
        resource = str(pid)
    elif kind == "file":
        if not isinstance(resource, str) or resource.startswith("/") or ".." in resource:
            raise InvalidRequest("resource must be a relative path prefix", param="resource")
    elif kind == "memory" and resource != "*":
        mid = _pos_int(a, "resource")
        k.memory.get(access.memory_access(k, c, {"owner": owner}, True, mid), mid)
        resource = str(mid)
    return k.shares.grant(kind, owner, str(resource), a.get("principal"), a.get("perm", "read"))


async def _share_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.shares.listing(None if c.is_admin else c.owner, c.principals)


async def _share_rm(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.shares.revoke(_pos_int(a, "id"), None if c.is_admin else c.owner)


# -- audit --------------------------------------------------------------------------
async def _audit_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    limit = min(_pos_int(a, "limit", 100), 1000)
    before = None if a.get("before") is None else _pos_int(a, "before")
    outcome = a.get("outcome")
    if outcome is not None and outcome not in ("allowed", "denied", "failed"):
        raise InvalidRequest("outcome must be allowed, denied or failed", param="outcome")
    actor = None if a.get("actor") is None else _str(a, "actor")
    return k.audit.listing(limit, before, actor, outcome)


async def _audit_verify(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.audit.verify()


async def _whoami(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    proc = None if c.pid is None else k.procs.find(c.pid)
    return {
        "owner": c.owner,
        "role": c.role,
        "token_id": c.token_id,
        "groups": sorted(c.groups),
        "pid": c.pid,
        "process_alive": None if proc is None else proc.state < ProcState.EXITED,
        "capabilities": None if c.caps is None else c.caps.to_dict(),
    }


ADMIN_SYSCALLS = (
    Syscall(
        "user.add", _user_add, ADMINS, "add a user (role, groups); returns a first token", True
    ),
    Syscall("user.update", _user_update, ADMINS, "change a user's role or groups", True),
    Syscall("user.rm", _user_rm, ADMINS, "remove a user: tokens revoked, processes killed", True),
    Syscall("user.list", _user_list, OVERSEERS, "users, roles and groups"),
    Syscall("token.create", _token_create, PEOPLE, "a new API token (name, expiry)", True),
    Syscall("token.list", _token_list, PEOPLE, "tokens (never their secrets)"),
    Syscall("token.revoke", _token_revoke, PEOPLE, "revoke a token", True),
    Syscall("share.add", _share_add, HUMANS, "share a process, files or memories", True),
    Syscall("share.list", _share_list, PEOPLE, "shares you made or were given"),
    Syscall("share.rm", _share_rm, HUMANS, "withdraw a share", True),
    Syscall("audit.list", _audit_list, OVERSEERS, "the audit log, newest first"),
    Syscall("audit.verify", _audit_verify, OVERSEERS, "check the audit log's hash chain"),
    Syscall("auth.whoami", _whoami, READERS, "who the caller's token says they are"),
)
