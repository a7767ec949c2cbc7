"""The scheduling mechanism: run queues live here, in the kernel, not in the engines.

Invariants:
- every RUNNING request holds exactly one slot of exactly one device;
- a device never holds more requests than it has slots (`running[dev] <= dev.slots`);
- a request leaves its slot only when the device's generation has closed, so the
  next one dispatched there never waits inside the engine;
- a context switch happens only at a token boundary: the snapshot (prompt ids +
  generated ids + sampling parameters) resumes on any slot of a device on the same
  route (the same model and capabilities: capabilities.py, one run queue each), so
  with greedy sampling the output is the same as without the switch;
- a device failure is a context switch nobody asked for: the request goes back on the
  run queue with its snapshot (within its retry budget) and nothing is dispatched to
  the device until its circuit breaker (breaker.py) closes again;
- a suspended process's requests wait in the parking lot (parking.py): none is dispatched.
The policy decides order (push/pop), quanta and victims; what a device's events do to
a request while it holds a slot is segment.py; the rest is written once here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmos.devices.base import Device
from llmos.errors import DeviceError, Killed, LlmosError
from llmos.kernel import capabilities
from llmos.kernel.breaker import Breakers, FaultConfig
from llmos.kernel.parking import ParkingLot
from llmos.kernel.placement import Placement
from llmos.kernel.policies import Policy, SchedConfig, make_policy
from llmos.kernel.request import ReqState, Request
from llmos.kernel.segment import SwitchStats, run_segment

log = logging.getLogger(__name__)


@dataclass
class Hooks:
    """The kernel's accounting, told of every transition."""

    on_start: Callable[[Request], None]  # waiting -> running
    on_yield: Callable[[Request, bool], None]  # running -> waiting (counted preemption?)
    on_finish: Callable[[Request, bool], None]  # -> finished (was it holding a slot?)


class Scheduler:
    def __init__(
        self,
        devices: list[Device],
        policy: str,
        config: SchedConfig,
        hooks: Hooks,
        faults: FaultConfig | None = None,
        placement: str = "affinity",
    ):
        self.devices = devices
        self.config = config
        self.hooks = hooks
        self.faults = faults or FaultConfig()
        self.breakers = Breakers((d.name for d in devices), self.faults)
        self.policy_name = policy
        self.routes = capabilities.routes(devices)  # device name -> its run queue's key
        self._queues: dict[str, Policy] = {
            self.routes[d.name]: make_policy(policy, config) for d in devices
        }
        self.running: dict[str, set[Request]] = {d.name: set() for d in devices}
        self.peak_running: dict[str, int] = {d.name: 0 for d in devices}
        self.dispatched: dict[str, int] = {d.name: 0 for d in devices}
        self.decoded: dict[str, int] = {d.name: 0 for d in devices}  # tokens, ever
        self.stats = SwitchStats()
        self.parking = ParkingLot()  # suspended processes' requests: never dispatched
        self.paused: set[str] = set()  # devices being reconfigured (tuner.py): no dispatch
        self.draining: set[str] = set()  # devices leaving (fleet.py): no dispatch
        self.placement = Placement(placement)  # which free device a request runs on
        self._tasks: dict[Request, asyncio.Task[ReqState]] = {}
        self._abort: dict[Request, LlmosError] = {}
        self._preempting: set[Request] = set()  # cancelled before their first token
        self.decisions = 0  # schedule() passes that dispatched or preempted
        self.decision_ns = 0  # time spent in them

    # -- queries -------------------------------------------------------------------
    def queue(self, route: str) -> Policy:
        """The run queue of a route: a model's id, for a model served one way."""
        return self._queues[route]

    def depth(self, model: str) -> int:
        """Requests waiting for `model`, over all its routes (capability sets)."""
        routes = {self.routes[d.name] for d in self.devices if d.model == model}
        return sum(len(self._queues[r]) for r in routes)

    def num_waiting(self) -> int:
        return sum(len(q) for q in self._queues.values()) + len(self.parking)

    def num_running(self) -> int:
        return sum(len(r) for r in self.running.values())

    def waiting(self) -> list[Request]:
        return [r for q in self._queues.values() for r in q.waiting()] + self.parking.held()

    # -- verbs ---------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        req.enqueued_at = time.monotonic()
        if not self.parking.hold(req):
            self._queues[req.route].push(req)
        self.schedule()

    def reprioritize(self, pid: int, priority: int) -> None:
        """A process was reniced: its requests take the new priority, waiting ones
        re-sorted in their queue (keeping the time they have waited)."""
        for queue in self._queues.values():
            for req in [r for r in queue.waiting() if r.pid == pid]:
                queue.remove(req)
                req.priority = priority
                queue.push(req)
        for running in self.running.values():
            for req in running:
                if req.pid == pid:
                    req.priority = priority
        self.schedule()

    def set_policy(self, name: str, config: SchedConfig) -> None:
        """Switch policy at run time; waiting requests move over in their old order."""
        fresh = {model: make_policy(name, config) for model in self._queues}
        for model, old in self._queues.items():
            while (req := old.pop()) is not None:
                fresh[model].push(req)
        self._queues, self.policy_name, self.config = fresh, name, config
        self.schedule()

    def cancel(self, req: Request, error: LlmosError) -> None:
        """Fail a waiting request now; stop a running one at its next token."""
        if req.state.finished:
            return
        if self._unqueue(req, ReqState.FINISHED_ABORTED, error):
            return
        task = self._tasks.get(req)
        if task is not None:
            self._abort[req] = error
            task.cancel()

    def _unqueue(self, req: Request, state: ReqState, error: LlmosError) -> bool:
        """End a waiting request; False if it was not on the run queue."""
        queue = self._queues[req.route]
        if not queue.remove(req) and not self.parking.take(req):
            return False
        queue.on_finish(req, False)
        req.finish(state, error)
        self.hooks.on_finish(req, False)
        return True

    def preempt(self, req: Request) -> bool:
        """Take the slot from a running request at its next clean token boundary."""
        task = self._tasks.get(req)
        if task is None or req.preempt_requested:
            return False
        req.preempt_requested = True
        if req.segment_tokens == 0:  # still reading its prompt: no token to wait for
            self._preempting.add(req)
            task.cancel()
        return True

    def suspend(self, pid: int) -> None:
        """Park a process's requests: waiting ones leave the run queue, running ones
        their slot at the next token boundary (except those that cannot resume
        exactly, under a grammar or on a device without token ids: they finish)."""
        self.parking.suspend(pid)
        for queue in self._queues.values():
            for req in [r for r in queue.waiting() if r.pid == pid]:
                queue.remove(req)
                self.parking.hold(req)
        for dev in self.devices:
            for req in [r for r in self.running[dev.name] if r.pid == pid]:
                if self._switchable(req, dev):
                    self.preempt(req)

    def evacuate(self, dev: Device) -> int:
        """Ask every request on `dev` that can resume exactly to leave its slot at its
        next token boundary (a drain, a retune); returns how many were asked."""
        running = [r for r in self.running[dev.name] if self._switchable(r, dev)]
        return sum(self.preempt(r) for r in running)

    def resume(self, pid: int) -> None:
        """Its parked requests become runnable again, in their order."""
        for req in self.parking.release(pid):
            req.enqueued_at = time.monotonic()  # time parked earns no aging
            self._queues[req.route].push(req)
        self.schedule()

    def schedule(self) -> None:
        """Fill every free slot in policy order, each request on the device placement
        picks among its route's free ones; then let the policy pick victims."""
        t0 = time.perf_counter_ns()
        acted = False
        open_ = [d for d in self.devices if self._open(d)]
        for route, queue in self._queues.items():
            serving = [d for d in open_ if self.routes[d.name] == route]
            while free := [d for d in serving if len(self.running[d.name]) < d.slots]:
                if (req := queue.pop()) is None:
                    break
                self._dispatch(req, self.placement.choose(req, free, self.running))
                acted = True
        for dev in open_:
            queue = self._queues[self.routes[dev.name]]
            running = self.running[dev.name]
            head = queue.peek()
            if head is not None and len(running) >= dev.slots:
                candidates = [
                    r for r in running if not r.preempt_requested and self._switchable(r, dev)
                ]
                victim = queue.choose_victim(candidates, head) if candidates else None
                if victim is not None:
                    acted = self.preempt(victim) or acted
        if acted:
            self.decisions += 1
            self.decision_ns += time.perf_counter_ns() - t0

    def _open(self, dev: Device) -> bool:
        """May requests be dispatched to it now?"""
        return self.breakers.allows(dev.name) and dev.name not in self.paused | self.draining

    # -- devices coming and going (kernel/fleet.py) ----------------------------------
    def attach(self, dev: Device) -> None:
        """A device joins: it serves the run queue of its model and capabilities."""
        self.routes[dev.name] = capabilities.route_for(dev, self.devices, self.routes)
        self._queues.setdefault(self.routes[dev.name], make_policy(self.policy_name, self.config))
        for table in (self.peak_running, self.dispatched, self.decoded):
            table.setdefault(dev.name, 0)
        self.running[dev.name] = set()
        self.breakers.add(dev.name)
        self.devices.append(dev)
        self.schedule()

    def detach(self, dev: Device) -> None:
        """A drained device leaves (nothing runs on it). Its counters stay."""
        assert not self.running[dev.name], "detach a device only once it is drained"
        self.devices.remove(dev)
        self.draining.discard(dev.name)
        self.placement.forget_device(dev.name)

    # -- mechanism -----------------------------------------------------------------
    @staticmethod
    def _switchable(req: Request, dev: Device) -> bool:
        """Can this request leave its slot and resume exactly? Not on a device that
        cannot take token ids, nor under a grammar (llama.cpp restarts it on resume),
        nor a chat handed over whole as messages (with image or audio parts)."""
        snapshot = req.snapshot
        return dev.resumable and snapshot.params.json_schema is None and snapshot.messages is None

    def _dispatch(self, req: Request, dev: Device) -> None:
        running = self.running[dev.name]
        running.add(req)
        self.peak_running[dev.name] = max(self.peak_running[dev.name], len(running))
        self.dispatched[dev.name] += 1
        queue = self._queues[self.routes[dev.name]]
        req.snapshot.limit = queue.quantum(req) if self._switchable(req, dev) else None
        req.state = ReqState.RUNNING
        req.device = dev.name
        req.dispatches += 1
        req.segment_tokens = 0
        req.preempt_requested = False
        req.started_at = req.started_at or time.monotonic()
        if req.dispatches > 1:
            self.stats.resumes += 1
        queue.on_dispatch(req)
        self.hooks.on_start(req)
        task = asyncio.get_running_loop().create_task(
            run_segment(req, dev, queue, self.stats, self.decoded), name=req.id
        )
        self._tasks[req] = task
        task.add_done_callback(lambda t: self._release(req, dev, t))

    def _release(self, req: Request, dev: Device, task: asyncio.Task[ReqState]) -> None:
        """Done-callback of every dispatched task: free the slot, then requeue, or
        finish and account the request (so a client that sees the end sees it
        accounted), then refill the slot."""
        self.running[dev.name].discard(req)
        self._tasks.pop(req, None)
        abort = self._abort.pop(req, None)
        preempting = req in self._preempting
        self._preempting.discard(req)
        queue = self._queues[req.route]
        if task.cancelled() and abort is None and preempting:
            self._requeue(req, queue, expired=False)
        elif task.cancelled():
            self._end(req, queue, ReqState.FINISHED_ABORTED, abort or Killed("request cancelled"))
        elif (exc := task.exception()) is not None:
            self._failed(req, dev, queue, exc)
        else:
            self.breakers[dev.name].success()
            if (outcome := task.result()) == ReqState.PREEMPTED:
                self._requeue(req, queue, expired=not req.preempt_requested)
            else:
                self._end(req, queue, outcome, None)
        self.schedule()

    def _failed(self, req: Request, dev: Device, queue: Policy, exc: BaseException) -> None:
        """A generation raised. An error of the request itself (the engine refused it)
        ends it; a device failure counts against the device's breaker and requeues the
        request with its snapshot, while it has retries left and can resume exactly:
        token-exact on a switchable device, else from scratch if nothing was sent yet."""
        if isinstance(exc, LlmosError) and not isinstance(exc, DeviceError):
            self._end(req, queue, ReqState.FINISHED_ERROR, exc)
            return
        if not isinstance(exc, LlmosError):  # a driver bug or an untranslated error
            log.error("device %s failed on %s", dev.name, req.id, exc_info=exc)
        reason = exc.message if isinstance(exc, LlmosError) else f"{type(exc).__name__}: {exc}"
        self.breakers.failure(dev.name, reason)
        req.faults += 1
        exact = self._switchable(req, dev)
        if req.faults > self.faults.retries:
            why = f"failed {req.faults} times on this request (retries: {self.faults.retries})"
        elif not exact and req.text:
            why = "failed after part of the answer was sent, and cannot resume it exactly"
        else:
            log.warning("device %s failed on %s (%s): requeued", dev.name, req.id, reason)
            req.rewind(restart=not exact)
            self._requeue(req, queue, expired=False, fault=True)
            return
        self._end(
            req, queue, ReqState.FINISHED_ERROR, DeviceError(f"device {dev.name} {why}: {reason}")
        )

    def _requeue(self, req: Request, queue: Policy, expired: bool, fault: bool = False) -> None:
        """Back on the run queue as PREEMPTED; counted when others were waiting (not
        after a device fault: no one took the slot)."""
        counted = not fault and (not expired or len(queue) > 0)
        if counted:
            req.preemptions += 1
            self.stats.preemptions += 1
        req.state = ReqState.PREEMPTED
        req.preempt_requested = False
        req.enqueued_at = time.monotonic()
        queue.on_yield(req, expired)
        if not self.parking.hold(req):
            queue.push(req)
        self.hooks.on_yield(req, counted)

    def _end(self, req: Request, queue: Policy, state: ReqState, error: LlmosError | None) -> None:
        queue.on_finish(req, True)
        req.finish(state, error)
        self.hooks.on_finish(req, True)

    async def drain(self) -> None:
        """Cancel everything running (shutdown)."""
        for req in list(self._tasks):
            self.cancel(req, Killed("the kernel is shutting down"))
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
