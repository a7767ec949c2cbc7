"""Admission control: bounded queues (429 + Retry-After) and per-process quotas.

Retry-After is the work ahead over the slots: the predicted service time (the time
a request holds a slot, kernel/predictor.py) summed over the requests waiting
ahead, plus one request at the recent mean service time. Requests are priced lazily, in one batched
prediction when an estimate is needed, and priced at the recent mean service time
while no latency model is trained. A preempted request is priced again in full
when it is queued again (an overestimate of its remaining work)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from llmos.errors import Overloaded, QuotaExceeded
from llmos.kernel.process import Process
from llmos.kernel.request import Request


class ServicePredictor(Protocol):
    def service_times(self, reqs: Sequence[Request]) -> list[float] | None: ...


class Admission:
    def __init__(
        self,
        max_queue: int,
        max_queue_per_owner: int,
        slots: int,
        predictor: ServicePredictor | None = None,
    ) -> None:
        self.max_queue = max_queue
        self.max_queue_per_owner = max_queue_per_owner
        self.slots = max(1, slots)
        self.predictor = predictor
        self.waiting_by_owner: Counter[str] = Counter()
        self.waiting_by_pid: Counter[int] = Counter()
        self.waiting = 0
        self.service_s = 1.0  # exponentially weighted mean slot time of recent requests
        # Invariant: every waiting request is in exactly one of _unpriced and _price;
        # the work sums are the sums of _price's values (whole, by owner, by pid).
        self._unpriced: dict[Request, None] = {}
        self._price: dict[Request, float] = {}
        self.work_s = 0.0
        self.work_by_owner: dict[str, float] = {}
        self.work_by_pid: dict[int, float] = {}

    def retry_after(self, work_s: float) -> int:
        """Seconds until `work_s` of waiting work and one more request have run."""
        return max(1, math.ceil((work_s + self.service_s) / self.slots))

    def price(self) -> None:
        """Price the requests queued since the last estimate, in one prediction."""
        if not self._unpriced:
            return
        reqs = list(self._unpriced)
        self._unpriced.clear()
        times = self.predictor.service_times(reqs) if self.predictor is not None else None
        for req, seconds in zip(reqs, times or [self.service_s] * len(reqs), strict=True):
            self._price[req] = seconds
            self.work_s += seconds
            self.work_by_owner[req.owner] = self.work_by_owner.get(req.owner, 0.0) + seconds
            self.work_by_pid[req.pid] = self.work_by_pid.get(req.pid, 0.0) + seconds

    def admit(self, proc: Process) -> None:
        """Raise if this process may not queue one more request now."""
        if proc.token_budget is not None and proc.tokens_in + proc.tokens_out >= proc.token_budget:
            raise QuotaExceeded(
                f"process {proc.pid} has used its token budget of {proc.token_budget} tokens",
                param="token_budget",
            )
        if proc.max_concurrent is not None and proc.waiting + proc.running >= proc.max_concurrent:
            raise Overloaded(
                f"process {proc.pid} already has {proc.max_concurrent} requests in flight "
                f"(its max_concurrent quota)",
                param="max_concurrent",
                code="quota_exceeded",
                retry_after=self._retry_pid(proc.pid),
            )
        if self.waiting >= self.max_queue:
            raise Overloaded(
                f"the run queue is full ({self.max_queue} requests waiting); retry later",
                param="max_queue",
                retry_after=self._retry_all(),
            )
        ahead = self.waiting_by_owner[proc.owner]
        if ahead >= self.max_queue_per_owner:
            raise Overloaded(
                f"owner {proc.owner!r} has {ahead} requests waiting, the most one owner may "
                f"queue; retry later",
                param="max_queue_per_owner",
                retry_after=self._retry_owner(proc.owner),
            )

    def _retry_all(self) -> int:
        self.price()
        return self.retry_after(self.work_s)

    def _retry_owner(self, owner: str) -> int:
        self.price()
        return self.retry_after(self.work_by_owner.get(owner, 0.0))

    def _retry_pid(self, pid: int) -> int:
        self.price()
        return self.retry_after(self.work_by_pid.get(pid, 0.0))

    # The kernel's hooks keep the counts (waiting = queued or preempted).
    def queued(self, req: Request) -> None:
        self.waiting += 1
        self.waiting_by_owner[req.owner] += 1
        self.waiting_by_pid[req.pid] += 1
        self._unpriced[req] = None

    def dequeued(self, req: Request) -> None:
        self.waiting -= 1
        self.waiting_by_owner[req.owner] -= 1
        if self.waiting_by_owner[req.owner] <= 0:
            del self.waiting_by_owner[req.owner]
            self.work_by_owner.pop(req.owner, None)  # exactly zero, not float residue
        self.waiting_by_pid[req.pid] -= 1
        if self.waiting_by_pid[req.pid] <= 0:
            del self.waiting_by_pid[req.pid]
            self.work_by_pid.pop(req.pid, None)
        if req in self._unpriced:
            del self._unpriced[req]
            return
        seconds = self._price.pop(req, 0.0)
        if not self.waiting:
            self.work_s = 0.0
        else:
            self.work_s = max(0.0, self.work_s - seconds)
        if req.owner in self.work_by_owner:
            self.work_by_owner[req.owner] = max(0.0, self.work_by_owner[req.owner] - seconds)
        if req.pid in self.work_by_pid:
            self.work_by_pid[req.pid] = max(0.0, self.work_by_pid[req.pid] - seconds)

    def served(self, seconds: float) -> None:
        self.service_s = 0.9 * self.service_s + 0.1 * seconds
