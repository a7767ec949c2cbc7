"""The background loops' waiting and ending (kernel/bgtask.py): a cancellation that
arrives as the awaited event is set is never lost (Python 3.11's wait_for loses it;
a CI run hung in the batch runner's stop because of it)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from llmos.kernel import bgtask


async def _loop(event: asyncio.Event, wait: object) -> None:
    while True:
        await wait(event)  # type: ignore[operator]
        event.clear()


async def _cancel_as_the_event_fires(wait: object) -> asyncio.Task[None]:
    event = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_loop(event, wait))
    await asyncio.sleep(0)  # the loop now waits on the event
    event.set()  # the event and the cancellation arrive together
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    return task


async def test_a_loop_waiting_with_bgtask_wait_ends_when_cancelled() -> None:
    task = await _cancel_as_the_event_fires(lambda e: bgtask.wait(e, 30))
    assert task.done() and task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps cancellations from 3.12")
async def test_asyncio_wait_for_on_3_11_loses_that_cancellation() -> None:
    """Why bgtask.wait exists: the same loop written with wait_for survives cancel()."""
    task = await _cancel_as_the_event_fires(lambda e: asyncio.wait_for(e.wait(), 30))
    assert not task.done()  # it lost the cancellation and waits again
    task.cancel()  # a second cancel reaches it
    await asyncio.wait({task}, timeout=1.0)
    assert task.cancelled()


async def test_wait_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await bgtask.wait(event, 0.01) is False
    event.set()
    assert await bgtask.wait(event, 0.01) is True


async def test_cancel_propagates_a_loops_own_error() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.get_running_loop().create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="boom"):
        await bgtask.cancel(task)
    await bgtask.cancel(None)  # nothing to end
