"""What a syscall is, and who may make it. Subsystems declare their syscalls
beside their code as `Syscall` rows; syscalls.py gathers them into the table.

Roles: `admin` (everything), `user` (their own resources and what is shared with
them), `viewer` (read-only), `process` (a capability token derived at spawn,
never wider than its owner's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.tokens import Caller

Handler = Callable[["Kernel", "Caller", dict[str, Any]], Awaitable[Any]]

READERS = frozenset({"admin", "user", "viewer", "process"})  # read-only calls
ALL = frozenset({"admin", "user", "process"})  # calls that change something
HUMANS = frozenset({"admin", "user"})
ADMINS = frozenset({"admin"})


def int_in(a: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    """An integer argument within low..high (a bool is not one); else InvalidRequest."""
    value = a.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be an integer from {low} to {high}", param=key)
    return value


@dataclass(frozen=True)
class Syscall:
    name: str
    handler: Handler
    roles: frozenset[str]  # who may make it
    doc: str
    privileged: bool = False  # audited even when allowed (denials always are)
