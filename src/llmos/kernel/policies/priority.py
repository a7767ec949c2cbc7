"""Priority with aging: higher `priority` runs first; every `aging_s` seconds of
waiting is worth one level, so no request waits forever.

Score = priority + waited / aging_s. Since every waiting request ages at the same
rate, ordering by score is ordering by the fixed key `enqueued_at / aging_s -
priority` (smaller first), so a heap keeps it exact. A waiting head preempts the
running request with the lowest score (as of its dispatch) if it beats it by
`preempt_margin` levels; a preempted request keeps the score it had earned, so each
preemption needs a better head and the wait stays bounded."""

from __future__ import annotations

from collections.abc import Sequence

from llmos.kernel.policies._heap import KeyedPolicy
from llmos.kernel.policies.base import Clock, SchedConfig
from llmos.kernel.request import Request


class PriorityPolicy(KeyedPolicy):
    name = "priority"

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        self._earned: dict[Request, float] = {}  # running request -> score at dispatch

    def score(self, req: Request) -> float:
        """The aged priority of a waiting request, now."""
        return req.priority + (self.clock() - req.enqueued_at) / self.config.aging_s

    def key(self, req: Request) -> float:
        return req.enqueued_at / self.config.aging_s - req.priority

    def on_dispatch(self, req: Request) -> None:
        self._earned[req] = self.score(req)

    def on_yield(self, req: Request, expired: bool) -> None:
        earned = self._earned.pop(req, req.priority)
        req.enqueued_at -= (earned - req.priority) * self.config.aging_s  # keep the credit

    def on_finish(self, req: Request, was_running: bool) -> None:
        self._earned.pop(req, None)

    def choose_victim(self, running: Sequence[Request], head: Request) -> Request | None:
        victim = min(running, key=lambda r: self._earned.get(r, r.priority))
        if (
            self.score(head)
            >= self._earned.get(victim, victim.priority) + self.config.preempt_margin
        ):
            return victim
        return None
