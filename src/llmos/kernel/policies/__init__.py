"""Scheduling policies, by name. Each is a small class over the scheduler's mechanism."""

from __future__ import annotations

from llmos.errors import InvalidRequest
from llmos.kernel.policies.base import Clock, Policy, Predictor, SchedConfig
from llmos.kernel.policies.fair import FairPolicy
from llmos.kernel.policies.fifo import FifoPolicy
from llmos.kernel.policies.mlfq import MlfqPolicy
from llmos.kernel.policies.priority import PriorityPolicy
from llmos.kernel.policies.rr import RoundRobinPolicy
from llmos.kernel.policies.sjf import SjfPolicy

POLICIES: dict[str, type[Policy]] = {
    p.name: p
    for p in (FifoPolicy, RoundRobinPolicy, PriorityPolicy, MlfqPolicy, FairPolicy, SjfPolicy)
}


def make_policy(name: str, config: SchedConfig | None = None, clock: Clock | None = None) -> Policy:
    factory = POLICIES.get(name)
    if factory is None:
        raise InvalidRequest(
            f"unknown policy {name!r}; choose one of {', '.join(sorted(POLICIES))}",
            param="policy",
        )
    return factory(config or SchedConfig(), clock)


__all__ = ["POLICIES", "Policy", "Predictor", "SchedConfig", "make_policy"]
