"""Health checks: one asyncio task probes every device on an interval, and at once
when a generation fails on one; the answers drive the devices' circuit breakers.
The same task fails requests that waited too long for a device of their model to
come back, so a dead device never makes a request hang.

Invariant: a probe never blocks the loop longer than `timeout_s`, whatever the device.
A device too busy to answer its health endpoint in time while it delivers tokens or
holds running requests is healthy: an engine under full load must not be cut off for
it (a dead one fails those requests' streams, which trips the breaker)."""

from __future__ import annotations

import asyncio
import logging
import time

from llmos.devices.base import Device
from llmos.kernel import bgtask, stranded
from llmos.kernel.breaker import BreakerState
from llmos.kernel.scheduler import Scheduler

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.breakers = scheduler.breakers
        self.interval_s = scheduler.faults.interval_s
        self.timeout_s = scheduler.faults.probe_timeout_s
        self.rounds = 0  # completed check rounds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.breakers.wake = self.wake

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._loop(), name="llmos-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await bgtask.cancel(task)

    def wake(self) -> None:
        """Check now (a generation just failed somewhere)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a bug here must not end health checking for good
                log.exception("health check round failed")
            await bgtask.wait(self._wake, self._next_wait())
            self._wake.clear()

    async def check(self) -> None:
        """One round: probe the devices due for it, then expire stranded requests."""
        due = [d for d in self.scheduler.devices if self.breakers[d.name].probe_due()]
        seen = [self.breakers[d.name].changes for d in due]
        results = await asyncio.gather(*(self._probe(d) for d in due))
        reopened = False
        for dev, changes, (ok, detail) in zip(due, seen, results, strict=True):
            breaker = self.breakers[dev.name]
            if breaker.changes != changes:  # failed while we asked: the wake asks again
                continue
            was = breaker.allows
            breaker.probed(ok, detail)
            reopened = reopened or (breaker.allows and not was)
        self.rounds += 1
        stranded.expire(self.scheduler)
        if reopened:
            self.scheduler.schedule()

    async def _probe(self, dev: Device) -> tuple[bool, str]:
        decoded = self.scheduler.decoded[dev.name]
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: see bgtask.py
                ok = await dev.health()
        except TimeoutError:
            if self.scheduler.decoded[dev.name] > decoded or self.scheduler.running[dev.name]:
                # Busy, not dead: it decodes, or holds requests whose own streams will
                # fail if it has died (a long prefill yields no token for a while).
                return True, ""
            return False, f"health check timed out after {self.timeout_s:g}s"
        except Exception as e:  # a driver bug or a foreign error: the device is not healthy
            return False, f"health check failed: {e or type(e).__name__}"
        return bool(ok), "" if ok else "health check answered: not healthy"

    def _next_wait(self) -> float:
        """Until the next periodic round, cooldown end or stranded-request deadline."""
        now = time.monotonic()
        waits = [self.interval_s]
        for dev in self.scheduler.devices:
            b = self.breakers[dev.name]
            if b.state == BreakerState.OPEN and b.opened_at is not None:
                waits.append(b.opened_at + b.config.cooldown_s - now)
        deadline = stranded.next_deadline(self.scheduler)
        if deadline is not None:
            waits.append(deadline - now)
        return max(0.01, min(waits))
