"""Requests stranded by devices that do not come back: when every device of a
route has its circuit open, its waiting requests wait at most `wait_s` (from the
later of their enqueueing and the outage), then fail with 503. The health monitor
(health.py) calls these on its rounds."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from llmos.errors import Unavailable
from llmos.kernel.request import ReqState

if TYPE_CHECKING:
    from llmos.kernel.scheduler import Scheduler


def _down_since(s: Scheduler, model: str) -> float | None:
    """Since when no device of route `model` takes dispatches; None if one does."""
    breakers = [s.breakers[d.name] for d in s.devices if s.routes[d.name] == model]
    if any(b.allows for b in breakers):
        return None
    return max(b.down_since or 0.0 for b in breakers)


def next_deadline(s: Scheduler) -> float | None:
    """When the next waiting request will have waited too long for a device."""
    deadlines = []
    for model, queue in s._queues.items():
        since = _down_since(s, model)
        if since is not None and len(queue):
            first = min(r.enqueued_at for r in queue.waiting())
            deadlines.append(max(first, since) + s.faults.wait_s)
    return min(deadlines, default=None)


def expire(s: Scheduler) -> None:
    """Fail (503) requests that waited `wait_s` for a device of their model to return."""
    now = time.monotonic()
    for model, queue in s._queues.items():
        since = _down_since(s, model)
        if since is None:
            continue
        down = [s.breakers[d.name] for d in s.devices if s.routes[d.name] == model]
        states = "; ".join(f"{b.device} is {b.state.name.lower()} ({b.last_error})" for b in down)
        wait = s.faults.wait_s
        for req in queue.waiting():
            if now - max(req.enqueued_at, since) >= wait:
                message = f"no device serving {model!r} came back within {wait:g}s: {states}"
                s._unqueue(req, ReqState.FINISHED_ERROR, Unavailable(message, param="model"))
