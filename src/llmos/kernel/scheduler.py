"""The scheduling mechanism: run queues live here, in the kernel, not in the engines.

Invariants:
- every RUNNING request holds exactly one slot of exactly one device;
- a device never holds more requests than it has slots (`running[dev] <= dev.slots`);
- a request leaves its slot only when the device's generation has closed, so the
  next one dispatched there never waits inside the engine.
The policy decides order (push/pop) and victims; everything else is written once here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import aclosing

from llmos.devices.base import Device
from llmos.errors import DeviceError, Killed, LlmosError
from llmos.kernel.policies import Policy, make_policy
from llmos.kernel.request import Delta, ReqState, Request
from llmos.kernel.stops import StopMatcher
from llmos.types import Token

log = logging.getLogger(__name__)

Hook = Callable[[Request], None]


class Scheduler:
    def __init__(self, devices: list[Device], policy: str, on_start: Hook, on_finish: Hook):
        self.devices = devices
        self.policy_name = policy
        self._queues: dict[str, Policy] = {d.model: make_policy(policy) for d in devices}
        self.running: dict[str, set[Request]] = {d.name: set() for d in devices}
        self.peak_running: dict[str, int] = {d.name: 0 for d in devices}
        self.dispatched: dict[str, int] = {d.name: 0 for d in devices}
        self._tasks: dict[Request, asyncio.Task[ReqState]] = {}
        self._abort: dict[Request, LlmosError] = {}
        self._on_start = on_start
        self._on_finish = on_finish

    # -- queries -------------------------------------------------------------------
    def queue(self, model: str) -> Policy:
        return self._queues[model]

    def num_waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def num_running(self) -> int:
        return sum(len(r) for r in self.running.values())

    def waiting(self) -> list[Request]:
        return [r for q in self._queues.values() for r in q.waiting()]

    # -- verbs ---------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        self._queues[req.model].push(req)
        self.schedule()

    def cancel(self, req: Request, error: LlmosError) -> None:
        """Fail a waiting request now; stop a running one at its next token."""
        if req.state.finished:
            return
        if self._queues[req.model].remove(req):
            req.finish(ReqState.FINISHED_ABORTED, error)
            self._on_finish(req)
            return
        task = self._tasks.get(req)
        if task is not None:
            self._abort[req] = error
            task.cancel()

    def schedule(self) -> None:
        """Fill every free slot from its model's queue, in policy order."""
        for dev in self.devices:
            queue = self._queues[dev.model]
            running = self.running[dev.name]
            while len(running) < dev.slots:
                req = queue.pop()
                if req is None:
                    break
                self._dispatch(req, dev)

    # -- mechanism -----------------------------------------------------------------
    def _dispatch(self, req: Request, dev: Device) -> None:
        running = self.running[dev.name]
        running.add(req)
        self.peak_running[dev.name] = max(self.peak_running[dev.name], len(running))
        self.dispatched[dev.name] += 1
        req.state = ReqState.RUNNING
        req.device = dev.name
        req.started_at = req.started_at or time.monotonic()
        self._on_start(req)
        task = asyncio.get_running_loop().create_task(self._run(req, dev), name=req.id)
        self._tasks[req] = task
        task.add_done_callback(lambda t: self._release(req, dev, t))

    async def _run(self, req: Request, dev: Device) -> ReqState:
        """Decode until the device finishes, a stop string hits, or we are cancelled.
        Returns the final state; `_release` records it once the slot is free."""
        matcher = StopMatcher(req.snapshot.params.stop)
        pending: list[Token] = []
        state = ReqState.FINISHED_STOPPED
        async with aclosing(dev.generate(req.snapshot)) as events:
            async for event in events:
                if not isinstance(event, Token):
                    req.cached_tokens = event.cached_tokens
                    if event.reason == "length":
                        state = ReqState.FINISHED_LENGTH
                    break
                if req.snapshot.remaining <= 0:  # a device that overruns max_tokens
                    state = ReqState.FINISHED_LENGTH
                    break
                if req.first_token_at is None:
                    req.first_token_at = time.monotonic()
                req.snapshot.generated_ids.append(event.id)
                pending.append(event)
                text, hit = matcher.feed(event.text)
                if text or hit:
                    req.emit(Delta(text, tuple(pending)))
                    pending.clear()
                if hit:
                    break
        rest = matcher.flush()
        if rest or pending:
            req.emit(Delta(rest, tuple(pending)))
        return state

    def _release(self, req: Request, dev: Device, task: asyncio.Task[ReqState]) -> None:
        """Done-callback of every dispatched task: free the slot, then finish and
        account the request (so a client that sees the end sees it accounted),
        then refill the slot."""
        self.running[dev.name].discard(req)
        self._tasks.pop(req, None)
        abort = self._abort.pop(req, None)
        if task.cancelled():
            req.finish(ReqState.FINISHED_ABORTED, abort or Killed("request was cancelled"))
        elif (exc := task.exception()) is not None:
            if not isinstance(exc, LlmosError):
                log.error("device %s failed on %s", dev.name, req.id, exc_info=exc)
                exc = DeviceError(f"device {dev.name} failed: {exc}")
            req.finish(ReqState.FINISHED_ERROR, exc)
        else:
            req.finish(task.result())
        self._on_finish(req)
        self.schedule()

    async def drain(self) -> None:
        """Cancel everything running (shutdown)."""
        for req in list(self._tasks):
            self.cancel(req, Killed("the kernel is shutting down"))
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
