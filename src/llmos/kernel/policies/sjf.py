"""Shortest predicted job first. The predicted output length comes from the
kernel's learned predictor (telemetry-trained; see kernel/predictor.py), or from
max_tokens without one. Waiting ages a request: each second counts as
`sjf_aging_tokens_per_s` tokens less, so long jobs are not starved (the key
`remaining + enqueued_at * rate` orders exactly by that aged score). A much shorter
waiting job preempts the running job with the most predicted work left."""

from __future__ import annotations

from collections.abc import Sequence

from llmos.kernel.policies._heap import KeyedQueue
from llmos.kernel.policies.base import Clock, Policy, SchedConfig
from llmos.kernel.request import Request


class SjfPolicy(Policy):
    name = "sjf"

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        self._q = KeyedQueue()

    def predicted_remaining(self, req: Request) -> float:
        if req.predicted_tokens is None:
            predictor = self.config.predictor
            guess = predictor.predict(req) if predictor else req.snapshot.params.max_tokens
            req.predicted_tokens = max(1.0, min(float(guess), req.snapshot.params.max_tokens))
        return max(1.0, req.predicted_tokens - len(req.snapshot.generated_ids))

    def push(self, req: Request) -> None:
        key = self.predicted_remaining(req) + req.enqueued_at * self.config.sjf_aging_tokens_per_s
        self._q.push(key, req)

    def pop(self) -> Request | None:
        return self._q.pop()

    def peek(self) -> Request | None:
        return self._q.peek()

    def remove(self, req: Request) -> bool:
        return self._q.remove(req)

    def __len__(self) -> int:
        return len(self._q)

    def waiting(self) -> list[Request]:
        return self._q.ordered()

    def choose_victim(self, running: Sequence[Request], head: Request) -> Request | None:
        victim = max(running, key=self.predicted_remaining)
        factor = self.config.sjf_preempt_factor
        if self.predicted_remaining(victim) > factor * self.predicted_remaining(head):
            return victim
        return None
