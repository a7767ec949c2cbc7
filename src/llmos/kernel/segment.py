"""One segment of a request on a device: from dispatch to the moment its slot is
given back. The device's events become the request's tokens, text and outcome;
the scheduler (scheduler.py) decides what the outcome means for the run queue.

A segment ends when the device finishes, a stop string hits, the quantum
(`snapshot.limit`) runs out, or a preemption asked for is reached at a clean token
boundary (no partial character held back)."""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass

from llmos.devices.base import Device
from llmos.kernel.policies import Policy
from llmos.kernel.request import Delta, ReqState, Request
from llmos.types import Token


@dataclass
class SwitchStats:
    preemptions: int = 0  # slots taken from unfinished requests while others waited
    resumes: int = 0  # dispatches of a request that had run before
    resume_tokens: int = 0  # snapshot tokens sent on resumes whose timings came back
    resume_cached: int = 0  # ... of which the engine's prefix cache served

    @property
    def cache_hit(self) -> float | None:
        return self.resume_cached / self.resume_tokens if self.resume_tokens else None


async def run_segment(
    req: Request, dev: Device, queue: Policy, stats: SwitchStats, decoded: dict[str, int]
) -> ReqState:
    """Decode on `dev` until the segment ends; returns its outcome. Counts every token
    in `decoded[dev.name]` as it comes, and the prefix cache's share of a resume in
    `stats`."""
    assert req.matcher is not None
    resumed_from = len(req.snapshot.prompt_ids) + len(req.snapshot.generated_ids)
    async with aclosing(dev.generate(req.snapshot)) as events:
        async for event in events:
            if not isinstance(event, Token):
                if req.dispatches > 1 and event.prompt_tokens:
                    stats.resume_tokens += resumed_from
                    stats.resume_cached += event.cached_tokens
                if req.dispatches == 1:
                    req.cached_tokens = event.cached_tokens
                if event.reason != "length":
                    return _flush(req, ReqState.FINISHED_STOPPED)
                if req.snapshot.remaining > 0:  # only the quantum ran out
                    return ReqState.PREEMPTED
                return _flush(req, ReqState.FINISHED_LENGTH)
            if req.snapshot.remaining <= 0:  # a device that overruns max_tokens
                return _flush(req, ReqState.FINISHED_LENGTH)
            now = time.monotonic()
            req.first_token_at = req.first_token_at or now
            req.tick(now)
            req.snapshot.generated_ids.append(event.id)
            decoded[dev.name] += 1
            req.segment_tokens += 1
            queue.on_token(req)
            req.pending.append(event)
            text, hit = req.matcher.feed(event.text)
            if text or hit:
                req.emit(Delta(text, tuple(req.pending)))
                req.pending.clear()
            if hit:
                return ReqState.FINISHED_STOPPED
            if req.preempt_requested and event.text:  # a clean boundary: no partial char
                return ReqState.PREEMPTED
    return _flush(req, ReqState.FINISHED_STOPPED)


def _flush(req: Request, state: ReqState) -> ReqState:
    """The request finished: whatever text the stop matcher held back is its own."""
    req.flush_held()
    return state
