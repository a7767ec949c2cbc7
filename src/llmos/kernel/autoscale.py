"""The autoscaler: one asyncio task that looks at every replica group on an interval
and asks the fleet (fleet.py) to grow, shrink or mend it.

Per group, in this order, at most one decision a round and none within `cooldown_s`
of its last one:

1. **replace**: a replica whose circuit breaker is open (its generations failed and
   its health probe does not answer: a dead actor or node) is removed, and a new
   one started while the group is below `min` — its requests were already
   requeued with their snapshots by the scheduler and resume on the others;
2. **up**: below `max`, when requests wait for the group's model beyond
   `queue_per_slot` per slot, or its p95 time to first token over the last
   `WINDOW_S` exceeds `ttft_p95_s`;
3. **down**: above `min`, after `idle_s` with nothing waiting and under half its
   slots busy: the least busy replica is drained (fleet.remove: nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from llmos.kernel import bgtask
from llmos.kernel.fleet import Group
from llmos.kernel.percentile import percentile
from llmos.kernel.request import Request

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)

WINDOW_S = 60.0  # the TTFT window
IDLE_LOAD = 0.5  # "idle": under this share of the group's slots busy


class Autoscaler:
    def __init__(self, kernel: Kernel, interval_s: float) -> None:
        self.k = kernel
        self.interval_s = interval_s
        self.ttft: dict[str, deque[tuple[float, float]]] = {}  # model -> (at, ttft)
        self.idle_since: dict[str, float] = {}  # group -> when it last became idle
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()
        kernel.listeners.append(self.observe)

    def start(self) -> None:
        if self._task is None and self.k.fleet.groups:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="autoscale")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await bgtask.cancel(task)
        for work in list(self._work):
            await bgtask.cancel(work)

    def observe(self, req: Request) -> None:
        if req.first_token_at is None:
            return
        window = self.ttft.setdefault(req.model, deque(maxlen=4096))
        window.append((time.monotonic(), req.first_token_at - req.created_at))

    def p95_ttft(self, model: str) -> float | None:
        horizon = time.monotonic() - WINDOW_S
        return percentile((t for at, t in self.ttft.get(model, ()) if at >= horizon), 95)

    async def _loop(self) -> None:
        while True:
            try:
                self.round()
            except Exception:  # a bug here must not end autoscaling for good
                log.exception("autoscale round failed")
            await asyncio.sleep(self.interval_s)

    def round(self) -> None:
        """Decide for every group; the changes run in the background."""
        for g in self.k.fleet.groups.values():
            if self.k.fleet.busy(g):
                continue
            decision = self.decide(g)
            if decision is not None:
                task = asyncio.get_running_loop().create_task(self._carry_out(g, *decision))
                self._work.add(task)
                task.add_done_callback(self._work.discard)

    def decide(self, g: Group) -> tuple[str, str, str | None] | None:
        """(action, reason, device) or None."""
        fleet, s, now = self.k.fleet, self.k.scheduler, time.monotonic()
        active = fleet.active(g)
        for d in active:
            b = s.breakers[d.name]
            down_s = now - b.down_since if b.down_since is not None else 0.0
            if b.healthy is False and down_s >= g.policy.dead_after_s and not s.running[d.name]:
                return "replace", f"{d.name} is down ({down_s:.0f} s): {b.last_error}", d.name
        if now - g.last_change < g.policy.cooldown_s:
            return None
        if len(active) < g.policy.min:
            return "up", f"{len(active)} replicas, below the minimum {g.policy.min}", None
        models = {d.model for d in g.members}
        slots = sum(d.slots for d in active if s.breakers.allows(d.name)) or 1
        waiting = sum(s.depth(m) for m in models)
        running = sum(len(s.running[d.name]) for d in active)
        p95 = max((p for m in models if (p := self.p95_ttft(m)) is not None), default=None)
        if len(active) < g.policy.max:
            if waiting / slots > g.policy.queue_per_slot:
                return "up", f"{waiting} waiting on {slots} slots", None
            target = g.policy.ttft_p95_s
            if target is not None and p95 is not None and p95 > target and waiting:
                return "up", f"p95 time to first token {p95:.2f} s > {target:g} s", None
        if waiting or running >= IDLE_LOAD * slots:
            self.idle_since.pop(g.name, None)
            return None
        since = self.idle_since.setdefault(g.name, now)
        if len(active) > g.policy.min and now - since >= g.policy.idle_s:
            self.idle_since.pop(g.name, None)
            return "down", f"idle for {now - since:.0f} s ({running} running)", None
        return None

    async def _carry_out(self, g: Group, action: str, reason: str, device: str | None) -> None:
        fleet = self.k.fleet

        async def work() -> None:
            if action == "up":
                await fleet.add(g, reason)
            elif action == "down":
                await fleet.remove(g, fleet.victim(g), reason)
            else:
                dead = next(d for d in g.members if d.name == device)
                await fleet.remove(g, dead, reason, action="replace")
                if len(fleet.active(g)) < g.policy.min:
                    await fleet.add(g, f"replacing {device}", action="replace")

        try:
            await fleet.change(g, work)
        except Exception:  # logged; the next round decides again
            log.exception("autoscale %s of %s failed", action, g.name)
