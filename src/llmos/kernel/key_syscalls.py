"""The `key.*` syscalls: the state of encryption at rest, and key rotation without
downtime (crypto.py). Both are for admins and audited.

syscalls.py gathers KEY_SYSCALLS into the syscall table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.kernel.sysdefs import ADMINS, Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


def start_sweep(k: Kernel) -> None:
    """Re-seal rows under the active key in the background, if any key is left to
    retire and no sweep runs yet. The kernel cancels the task when it stops; a sweep
    cut short is picked up at the next start."""
    task = k.keys.start_sweep()
    if task is None:
        return
    k._background.add(task)
    task.add_done_callback(k._background.discard)


async def _key_status(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.keys.status()


async def _key_rotate(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    k.keys.rotate()
    start_sweep(k)
    return k.keys.status()


KEY_SYSCALLS = (
    Syscall(
        "key.status",
        _key_status,
        ADMINS,
        "encryption at rest: active data key, keys, rows left to re-encrypt",
        True,
    ),
    Syscall(
        "key.rotate",
        _key_rotate,
        ADMINS,
        "a new data key, active at once; rows are re-encrypted in the background",
        True,
    ),
)
