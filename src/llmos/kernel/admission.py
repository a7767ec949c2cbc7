"""Admission control: bounded queues (429 + Retry-After) and per-process quotas.

Retry-After is estimated from the work ahead and the recent service rate: requests
waiting, times the recent mean time a request holds a slot, over the slots."""

from __future__ import annotations

import math
from collections import Counter

from llmos.errors import Overloaded, QuotaExceeded
from llmos.kernel.process import Process
from llmos.kernel.request import Request


class Admission:
    def __init__(self, max_queue: int, max_queue_per_owner: int, slots: int) -> None:
        self.max_queue = max_queue
        self.max_queue_per_owner = max_queue_per_owner
        self.slots = max(1, slots)
        self.waiting_by_owner: Counter[str] = Counter()
        self.waiting = 0
        self.service_s = 1.0  # exponentially weighted mean slot time of recent requests

    def retry_after(self, ahead: int) -> int:
        return max(1, math.ceil((ahead + 1) * self.service_s / self.slots))

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
                retry_after=self.retry_after(proc.waiting),
            )
        if self.waiting >= self.max_queue:
            raise Overloaded(
                f"the run queue is full ({self.max_queue} requests waiting); retry later",
                param="max_queue",
                retry_after=self.retry_after(self.waiting),
            )
        ahead = self.waiting_by_owner[proc.owner]
        if ahead >= self.max_queue_per_owner:
            raise Overloaded(
                f"owner {proc.owner!r} has {ahead} requests waiting, the most one owner may "
                f"queue; retry later",
                param="max_queue_per_owner",
                retry_after=self.retry_after(ahead),
            )

    # The kernel's hooks keep the counts (waiting = queued or preempted).
    def queued(self, req: Request) -> None:
        self.waiting += 1
        self.waiting_by_owner[req.owner] += 1

    def dequeued(self, req: Request) -> None:
        self.waiting -= 1
        self.waiting_by_owner[req.owner] -= 1
        if self.waiting_by_owner[req.owner] <= 0:
            del self.waiting_by_owner[req.owner]

    def served(self, seconds: float) -> None:
        self.service_s = 0.9 * self.service_s + 0.1 * seconds
