"""The kernel's background loops (the sampler, the engine monitor, health checks,
online tuning) end the same way: cancelled, then awaited to their end."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has ended; its cancellation is not
    an error. Other exceptions it ended with propagate."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
