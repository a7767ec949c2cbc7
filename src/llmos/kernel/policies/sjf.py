"""Shortest predicted job first. The predicted output length comes from the
kernel's learned predictor (telemetry-trained; see kernel/predictor.py), or from
max_tokens without one. Waiting ages a request: each second counts as
`sjf_aging_tokens_per_s` tokens less, so long jobs are not starved (the key
`remaining + enqueued_at * rate` orders exactly by that aged score). A much shorter
waiting job preempts the running job with the most predicted work left."""

from __future__ import annotations

from collections.abc import Sequence

from llmos.kernel.policies._heap import KeyedPolicy
from llmos.kernel.request import Request


class SjfPolicy(KeyedPolicy):
    name = "sjf"

    def predicted_remaining(self, req: Request) -> float:
        if req.predicted_tokens is None:
            predictor = self.config.predictor
            guess = predictor.predict(req) if predictor else req.snapshot.params.max_tokens
            req.predicted_tokens = max(1.0, min(float(guess), req.snapshot.params.max_tokens))
        return max(1.0, req.predicted_tokens - len(req.snapshot.generated_ids))

    def key(self, req: Request) -> float:
        return self.predicted_remaining(req) + req.enqueued_at * self.config.sjf_aging_tokens_per_s

    def choose_victim(self, running: Sequence[Request], head: Request) -> Request | None:
        victim = max(running, key=self.predicted_remaining)
        factor = self.config.sjf_preempt_factor
        if self.predicted_remaining(victim) > factor * self.predicted_remaining(head):
            return victim
        return None
