"""Scheduling policies, by name."""

from __future__ import annotations

from collections.abc import Callable

from llmos.errors import InvalidRequest
from llmos.kernel.policies.base import Policy
from llmos.kernel.policies.fifo import FifoPolicy

POLICIES: dict[str, Callable[[], Policy]] = {"fifo": FifoPolicy}


def make_policy(name: str) -> Policy:
    factory = POLICIES.get(name)
    if factory is None:
        raise InvalidRequest(
            f"unknown policy {name!r}; choose one of {', '.join(sorted(POLICIES))}",
            param="policy",
        )
    return factory()


__all__ = ["POLICIES", "FifoPolicy", "Policy", "make_policy"]
