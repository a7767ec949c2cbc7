"""Syscalls of the auto-tuner (kernel/tuner.py): run a tuning, read the decisions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest
from llmos.kernel.sysdefs import ADMINS, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.kernel.tuner import TUNE_MAX_S

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

MIN_TUNE_S = 5.0  # a shorter budget cannot measure even the current settings
MAX_TUNE_S = 600.0
MAX_HISTORY = 1000


def _device(a: dict[str, Any]) -> str | None:
    device = a.get("device")
    if device is not None and (not isinstance(device, str) or not device):
        raise InvalidRequest("device must be a device's name", param="device")
    return device


async def _tune_run(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    dry_run = a.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidRequest("dry_run must be true or false", param="dry_run")
    seconds = a.get("max_seconds", TUNE_MAX_S)
    if seconds is None:
        seconds = TUNE_MAX_S
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidRequest("max_seconds must be a number", param="max_seconds")
    if not MIN_TUNE_S <= seconds <= MAX_TUNE_S:
        raise InvalidRequest(
            f"max_seconds must be between {MIN_TUNE_S:g} and {MAX_TUNE_S:g}", param="max_seconds"
        )
    return await k.tuner.run(
        _device(a), trigger="manual", dry_run=dry_run, max_seconds=float(seconds)
    )


async def _tune_history(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    limit = a.get("limit", 50)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY:
        raise InvalidRequest(f"limit must be an integer 1..{MAX_HISTORY}", param="limit")
    return k.tuner.log.list(limit, _device(a))


TUNE_SYSCALLS = (
    Syscall(
        "tune.run",
        _tune_run,
        ADMINS,
        "measure a device's settings, hill-climb to better ones, apply and record (or dry run)",
        True,
    ),
    Syscall("tune.history", _tune_history, READERS, "auto-tuning decisions, newest first"),
)
