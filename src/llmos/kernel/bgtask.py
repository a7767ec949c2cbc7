"""The kernel's background loops (the sampler, the engine monitor, health checks,
online tuning, batches) wait and end the same way.

Python 3.11's `asyncio.wait_for` returns the result when a cancellation arrives just
as the awaited thing completes, and the cancellation is lost (fixed in 3.12): a loop
waiting with it could outlive its own `cancel()` and hang whoever awaits its end (a
CI run hung so in the batch runner's stop). The kernel's loops wait with
`asyncio.timeout` instead, which never loses a cancellation: `wait` for an event."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds; True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has ended; its cancellation is not
    an error. Other exceptions it ended with propagate."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
