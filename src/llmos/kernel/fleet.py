"""The fleet: devices that come and go while the kernel runs.

A replica group is a device declaration (the cluster file, devices/cluster_spec.py)
that can be instantiated several times: `make(name)` builds an unstarted replica
(on Ray, an actor placed somewhere in the cluster). The fleet adds replicas, and
takes them away without losing a request:

- **add**: start the replica (bounded by `start_timeout_s`), then attach it to the
  scheduler, which dispatches to it at once;
- **remove** (scale-down, or a dead replica replaced): the device is marked draining
  (nothing new is dispatched there), its running requests that can resume exactly
  are preempted at their next token boundary and resume elsewhere from their
  snapshots, the others run to their end; only then is it detached and closed.

Every decision is a row of `scaling_events` (and a log line); autoscale.py decides
when, this module carries it out."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.devices.base import Device
from llmos.errors import InvalidRequest, NotFound
from llmos.params import JOBS_PER_SLOT

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS scaling_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    grp TEXT NOT NULL,
    action TEXT NOT NULL,
    device TEXT,
    replicas INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""
ACTIONS = ("up", "down", "replace", "failed")
DRAIN_POLL_S = 0.05


@dataclass(frozen=True)
class ScalePolicy:
    """When a group grows and shrinks (autoscale.py)."""

    min: int = 1
    max: int = 1
    queue_per_slot: float = 1.0  # up: requests waiting per slot of the group above this
    ttft_p95_s: float | None = None  # up: the model's p95 time to first token above this
    idle_s: float = 60.0  # down: nothing waiting and under half the slots busy this long
    cooldown_s: float = 10.0  # between two decisions of one group
    start_timeout_s: float = 300.0  # a replica not up by then is a failed start
    dead_after_s: float = 5.0  # a replica failing its health checks this long is replaced

    def check(self, param: str) -> None:
        if not 0 <= self.min <= self.max or self.max < 1:
            raise InvalidRequest(
                f"replicas need 0 <= min <= max and max >= 1 (min {self.min}, max {self.max})",
                param=f"{param}.replicas",
            )


@dataclass
class Group:
    name: str
    policy: ScalePolicy
    make: Callable[[str], Device]  # replica name -> an unstarted device
    members: list[Device]
    last_change: float = 0.0  # monotonic time of its last decision
    _next: itertools.count[int] | None = None

    def new_name(self) -> str:
        if self._next is None:
            self._next = itertools.count(len(self.members))
        taken = {d.name for d in self.members}
        while (name := f"{self.name}-{next(self._next)}") in taken:
            pass
        return name


class Fleet:
    def __init__(self, kernel: Kernel, groups: list[Group]) -> None:
        self.k = kernel
        self.groups = {g.name: g for g in groups}
        self.k.store.db.executescript(SCHEMA)
        self._busy: set[str] = set()  # groups with a change in progress

    # -- queries -------------------------------------------------------------------
    def group_of(self, device: str) -> Group | None:
        return next(
            (g for g in self.groups.values() if device in {d.name for d in g.members}), None
        )

    def group(self, name: Any) -> Group:
        if not isinstance(name, str) or name not in self.groups:
            have = ", ".join(self.groups) or "none (start with --cluster FILE)"
            raise NotFound(f"no replica group {name!r}; groups: {have}", param="group")
        return self.groups[name]

    def active(self, g: Group) -> list[Device]:
        return [d for d in g.members if d.name not in self.k.scheduler.draining]

    def busy(self, g: Group) -> bool:
        return g.name in self._busy

    def events(self, limit: int = 50, group: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM scaling_events"
        args: tuple[Any, ...] = ()
        if group is not None:
            sql, args = sql + " WHERE grp = ?", (group,)
        rows = self.k.store.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        out = [dict(r) for r in rows]
        for row in out:
            row["group"] = row.pop("grp")
            row["detail"] = json.loads(row["detail"])
        return out

    def status(self) -> list[dict[str, Any]]:
        s = self.k.scheduler
        return [
            {
                "group": g.name,
                "replicas": len(self.active(g)),
                "draining": [d.name for d in g.members if d.name in s.draining],
                "min": g.policy.min,
                "max": g.policy.max,
                "policy": g.policy.__dict__,
                "devices": [d.name for d in g.members],
                "waiting": sum(s.depth(m) for m in {d.model for d in g.members}),
                "running": sum(len(s.running[d.name]) for d in g.members),
                "slots": sum(d.slots for d in self.active(g)),
                "changing": self.busy(g),
            }
            for g in self.groups.values()
        ]

    # -- changes -------------------------------------------------------------------
    def record(self, g: Group, action: str, device: str | None, reason: str, **detail: Any) -> None:
        g.last_change = time.monotonic()
        replicas = len(self.active(g))
        log.info(
            "scale %s %s %s (%d replicas): %s", g.name, action, device or "-", replicas, reason
        )
        with self.k.store.db:
            self.k.store.db.execute(
                "INSERT INTO scaling_events (at, grp, action, device, replicas, reason, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), g.name, action, device, replicas, reason, json.dumps(detail)),
            )
        for listener in self.k.fleet_listeners:
            listener(g.name, action)

    async def add(self, g: Group, reason: str, action: str = "up") -> Device | None:
        """Start a replica and put it to work; None (and a `failed` event) if it did
        not come up in time."""
        dev = g.make(g.new_name())
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(g.policy.start_timeout_s):  # see bgtask.py
                await dev.start()
        except asyncio.CancelledError:  # the kernel is stopping: no replica left behind
            await _close_quietly(dev)
            raise
        except (Exception, TimeoutError) as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.record(g, "failed", dev.name, f"{reason}; the replica did not start: {why}")
            await _close_quietly(dev)
            return None
        g.members.append(dev)
        self.k.scheduler.attach(dev)
        slots_changed(self.k)
        self.record(g, action, dev.name, reason, start_s=round(time.monotonic() - t0, 3))
        return dev

    async def remove(self, g: Group, dev: Device, reason: str, action: str = "down") -> None:
        """Drain a replica (nothing is lost), then detach and close it."""
        s = self.k.scheduler
        s.draining.add(dev.name)
        t0 = time.monotonic()
        moved = s.evacuate(dev)
        while s.running[dev.name]:
            await asyncio.sleep(DRAIN_POLL_S)
        s.detach(dev)
        g.members.remove(dev)
        slots_changed(self.k)
        await _close_quietly(dev)
        self.record(
            g, action, dev.name, reason, moved=moved, drain_s=round(time.monotonic() - t0, 3)
        )
        s.schedule()

    async def change(self, g: Group, work: Callable[[], Any]) -> Any:
        """Run one change of a group at a time."""
        if g.name in self._busy:
            raise InvalidRequest(f"group {g.name} is already changing; try again", param="group")
        self._busy.add(g.name)
        try:
            return await work()
        finally:
            self._busy.discard(g.name)

    async def scale_to(self, g: Group, replicas: int, reason: str) -> list[dict[str, Any]]:
        """An operator's order: add or drain replicas until there are `replicas`."""
        bad = isinstance(replicas, bool) or not isinstance(replicas, int)
        if bad or not g.policy.min <= replicas <= g.policy.max:
            raise InvalidRequest(
                f"replicas of {g.name} must be between {g.policy.min} and {g.policy.max}",
                param="replicas",
            )

        async def work() -> None:
            while len(self.active(g)) < replicas:
                if await self.add(g, reason) is None:
                    break
            while len(self.active(g)) > replicas:
                await self.remove(g, self.victim(g), reason)

        await self.change(g, work)
        return self.events(limit=10, group=g.name)

    def victim(self, g: Group) -> Device:
        """The replica to take away: the one with least running, the newest on a tie."""
        running = self.k.scheduler.running
        members = self.active(g)
        return min(reversed(members), key=lambda d: len(running[d.name]))


async def _close_quietly(dev: Device) -> None:
    try:
        await dev.close()
    except Exception:  # a dead replica may not close cleanly; it is gone either way
        log.warning("closing %s failed", dev.name, exc_info=True)


def slots_changed(k: Kernel) -> None:
    """The kernel's slots changed (a replica came or went, a device was retuned):
    admission's Retry-After, the job runner's and the batch runner's capacity follow."""
    slots = max(1, sum(d.slots for d in k.devices))
    k.admission.slots = slots
    k.jobs.capacity = slots * JOBS_PER_SLOT
    k.batches.slots = slots
