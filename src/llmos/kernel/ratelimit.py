"""Per-token rate limit: a token bucket for each bearer token, checked once per syscall.

Every syscall a token makes takes one unit from its bucket; the bucket refills at
`rate` units a second up to `burst`. An empty bucket refuses with Overloaded (429)
and a Retry-After of the whole seconds until the next unit. Admin tokens are not
limited (the operator must always be able to look and to kill); `rate` 0 turns the
limit off. Health and metrics are not syscalls and are never limited.

Invariant: a bucket absent from the table is a full one, so buckets that have
refilled are dropped and the table holds only tokens active in the last
`burst / rate` seconds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmos.errors import Overloaded
from llmos.kernel.tokens import Caller

PRUNE_EVERY = 4096  # checks between sweeps of refilled buckets


@dataclass
class Bucket:
    level: float  # units left (fractional while refilling)
    at: float  # monotonic time `level` was computed


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}
        self.refused = 0
        self._checks = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, caller: Caller) -> None:
        """Take one unit for `caller`'s token, or raise Overloaded (429)."""
        if not self.enabled or caller.is_admin:
            return
        now = self.clock()
        self._checks += 1
        if self._checks % PRUNE_EVERY == 0:
            self._prune(now)
        bucket = self.buckets.get(caller.token_id)
        if bucket is None:
            bucket = self.buckets[caller.token_id] = Bucket(float(self.burst), now)
        else:
            bucket.level = min(float(self.burst), bucket.level + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return
        self.refused += 1
        wait = (1.0 - bucket.level) / self.rate
        raise Overloaded(
            f"rate limit: this token may make {self.rate:g} requests a second "
            f"(bursts of {self.burst}); retry in {wait:.2f} s",
            param="authorization",
            code="rate_limit_exceeded",
            retry_after=max(1, math.ceil(wait)),
        )

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, b in self.buckets.items()
            if b.level + (now - b.at) * self.rate >= self.burst
        ]
        for key in full:
            del self.buckets[key]
