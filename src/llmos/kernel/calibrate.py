"""Auto-tuning, the mechanism: taking a device out of service and back, and the
calibration workload that measures it meanwhile.

`hold(kernel, dev)` pauses dispatch to the device (`scheduler.paused`), preempts its
running requests at their next token boundary (their snapshots go back on the run
queue and resume exactly later, here or on another device of the model), and enters
once nothing runs there. Requests that cannot switch (Scheduler._switchable: under a
grammar, a chat handed over as messages, a device without token ids) are waited for,
`drain_s` at most. On exit, dispatch resumes.
Invariant: while held, a device runs only what the tuner itself sends it, so it may
be reloaded; and no waiting request needs more context than its device will have
(`need`), so a retune never changes or loses a request.

The calibration workload (`measure`) is a fixed burst: `n` greedy generations of
`tokens` tokens each from fixed, distinct prompts, at most `slots` at once (as the
kernel would dispatch them). Throughput counts generated tokens over the burst's
wall time; latencies count from the burst's start, as its clients would see them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING

from llmos.devices.base import Device
from llmos.errors import Overloaded
from llmos.kernel.percentile import percentile
from llmos.kernel.tune_search import Measure
from llmos.types import SamplingParams, Snapshot, Token

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

DRAIN_S = 30.0  # the longest a retune waits for requests that cannot be preempted
CAL_TOKENS = 48  # generated per calibration request
CAL_MIN_REQUESTS = 8
CAL_MAX_REQUESTS = 32
PROMPTS = (
    "Write a short note about the weather in spring.",
    "List three things to pack for a day at the beach.",
    "Explain what a compiler does, in plain words.",
    "Describe a quiet morning in a small town.",
    "Give two tips for learning a new language.",
    "Tell a very short story about a lost key.",
    "What makes a good cup of tea?",
    "Summarise why people keep gardens.",
)


@asynccontextmanager
async def hold(k: Kernel, dev: Device, drain_s: float = DRAIN_S) -> AsyncIterator[None]:
    sched = k.scheduler
    sched.paused.add(dev.name)
    try:
        sched.evacuate(dev)
        deadline = time.monotonic() + drain_s
        while sched.running[dev.name]:
            if time.monotonic() > deadline:
                left = len(sched.running[dev.name])
                raise Overloaded(
                    f"device {dev.name} still runs {left} request(s) that cannot be "
                    f"preempted after {drain_s:g}s; try the tuning again later",
                    param="device",
                    code="device_busy",
                )
            await asyncio.sleep(0.005)
        yield
    finally:
        sched.paused.discard(dev.name)
        sched.schedule()


def need(k: Kernel, dev: Device) -> int:
    """The most context (prompt + all it may generate) a request waiting for this
    device's model needs: the floor under any new context length."""
    waiting = [r for r in k.scheduler.waiting() if r.model == dev.model]
    running = k.scheduler.running[dev.name]
    return max(
        (len(r.snapshot.prompt_ids) + r.snapshot.params.max_tokens for r in [*waiting, *running]),
        default=0,
    )


def workload_size(slots: int, demand: int) -> int:
    """Twice the slots, or the most requests seen at once on the device, if more."""
    return max(CAL_MIN_REQUESTS, min(CAL_MAX_REQUESTS, max(2 * slots, demand)))


async def prompts(dev: Device, n: int) -> list[list[int]]:
    return [await dev.tokenize(f"{PROMPTS[i % len(PROMPTS)]} ({i + 1})") for i in range(n)]


async def measure(dev: Device, burst: list[list[int]], tokens: int = CAL_TOKENS) -> Measure:
    """Run the burst through the device itself (it must be held) and measure it."""
    gate = asyncio.Semaphore(dev.slots)
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    t0 = time.monotonic()

    async def one(ids: list[int]) -> tuple[float | None, float, int]:
        first: float | None = None
        made = 0
        async with gate, aclosing(dev.generate(Snapshot(list(ids), params))) as events:
            async for event in events:
                if isinstance(event, Token):
                    made += 1
                    first = first or time.monotonic() - t0
        return first, time.monotonic() - t0, made

    tasks = [asyncio.ensure_future(one(ids)) for ids in burst]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    seconds = max(1e-9, time.monotonic() - t0)
    made = sum(r[2] for r in results)
    ends = [r[1] for r in results]
    return Measure(
        tokens_per_s=made / seconds,
        p50_s=percentile(ends, 50),
        p95_s=percentile(ends, 95),
        ttft_p50_s=percentile((r[0] for r in results if r[0] is not None), 50),
        requests=len(results),
        tokens=made,
        seconds=seconds,
    )
