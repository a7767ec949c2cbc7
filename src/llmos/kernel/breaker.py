"""A circuit breaker per device: the scheduler dispatches only to CLOSED devices.

Transitions (all here, each logged):
- CLOSED -> HALF_OPEN: a generation failed on the device, fewer than `threshold`
  times in a row. Nothing more is dispatched there until a health probe answers.
- CLOSED | HALF_OPEN -> OPEN: `threshold` consecutive failures, or a failed probe.
- OPEN -> HALF_OPEN: the cooldown has passed; the next probe decides.
- HALF_OPEN -> CLOSED: a probe answered. After a cooldown the breaker stays one
  failure from OPEN until a generation succeeds there again.
A completed generation resets the count of consecutive failures; a request-level
error (a bad request the engine refused) neither counts nor resets.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llmos.errors import InvalidRequest
from llmos.params import (
    BREAKER_COOLDOWN_S,
    BREAKER_THRESHOLD,
    DEVICE_RETRIES,
    DEVICE_WAIT_S,
    HEALTH_INTERVAL_S,
    HEALTH_TIMEOUT_S,
    Settings,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class BreakerState(enum.IntEnum):
    """Ordered by how much traffic the device gets: `state > CLOSED` dispatches nothing."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class FaultConfig:
    """How the kernel rides out device failures (params.py has the meanings)."""

    threshold: int = BREAKER_THRESHOLD
    cooldown_s: float = BREAKER_COOLDOWN_S
    retries: int = DEVICE_RETRIES
    wait_s: float = DEVICE_WAIT_S
    interval_s: float = HEALTH_INTERVAL_S
    probe_timeout_s: float = HEALTH_TIMEOUT_S

    @classmethod
    def from_settings(cls, s: Settings) -> FaultConfig:
        """The settings' fault knobs; InvalidRequest names the first bad one."""
        config = cls(
            threshold=s.breaker_threshold,
            cooldown_s=s.breaker_cooldown_s,
            retries=s.device_retries,
            wait_s=s.device_wait_s,
            interval_s=s.health_interval_s,
            probe_timeout_s=s.health_timeout_s,
        )
        config.validate()
        return config

    def validate(self) -> None:
        checks = (
            ("breaker_threshold", self.threshold, 1, 1000),
            ("breaker_cooldown_s", self.cooldown_s, 0.01, 86400),
            ("device_retries", self.retries, 0, 100),
            ("device_wait_s", self.wait_s, 0.01, 86400),
            ("health_interval_s", self.interval_s, 0.01, 86400),
            ("health_timeout_s", self.probe_timeout_s, 0.01, 3600),
        )
        for name, value, low, high in checks:
            if isinstance(value, bool) or not low <= value <= high:
                raise InvalidRequest(f"{name} must be between {low:g} and {high:g}", param=name)


class Breaker:
    def __init__(self, device: str, config: FaultConfig, clock: Clock = time.monotonic) -> None:
        self.device = device
        self.config = config
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive generation failures
        self.faults = 0  # generation failures, ever
        self.trips = 0  # times opened
        self.last_error: str | None = None
        self.opened_at: float | None = None  # when it last went OPEN
        self.down_since: float | None = None  # when it stopped taking dispatches
        self.healthy: bool | None = None  # the last probe's answer (None: not probed yet)
        self.changes = 0  # bumped by every failure and transition (stale probe answers)

    @property
    def allows(self) -> bool:
        return self.state == BreakerState.CLOSED

    def _move(self, state: BreakerState, why: str) -> None:
        if state == self.state:
            return
        level = logging.INFO if state == BreakerState.CLOSED else logging.WARNING
        log.log(
            level, "device %s circuit %s -> %s: %s", self.device, self.state.name, state.name, why
        )
        self.changes += 1
        if state == BreakerState.OPEN:
            self.trips += 1
            self.opened_at = self.clock()
        if self.state == BreakerState.CLOSED:
            self.down_since = self.clock()
        elif state == BreakerState.CLOSED:
            self.down_since = None
        self.state = state

    def failure(self, error: str) -> None:
        """A generation failed because of the device."""
        self.faults += 1
        self.failures += 1
        self.changes += 1
        self.last_error = error
        if self.failures >= self.config.threshold:
            self._move(BreakerState.OPEN, f"{self.failures} failures in a row ({error})")
        elif self.state == BreakerState.CLOSED:
            self._move(BreakerState.HALF_OPEN, f"a generation failed ({error}); probing")

    def success(self) -> None:
        """A generation ended normally on the device."""
        if self.state == BreakerState.CLOSED:
            self.failures = 0

    def probe_due(self) -> bool:
        """Is a health probe wanted now? (OPEN probes only after its cooldown.)"""
        if self.state != BreakerState.OPEN:
            return True
        assert self.opened_at is not None
        return self.clock() - self.opened_at >= self.config.cooldown_s

    def probed(self, ok: bool, detail: str = "") -> None:
        """A health probe answered (`ok`) or failed."""
        self.healthy = ok
        if not ok:
            self.last_error = detail or "health check failed"
            if self.state == BreakerState.OPEN:
                self.opened_at = self.clock()  # another cooldown
            else:
                self._move(BreakerState.OPEN, self.last_error)
            return
        if self.state == BreakerState.OPEN:
            self._move(BreakerState.HALF_OPEN, "cooldown over and the health check answered")
            self.failures = self.config.threshold - 1  # on probation
        self._move(BreakerState.CLOSED, "the health check answered")

    def info(self) -> dict[str, Any]:
        return {
            "breaker": self.state.name.lower(),
            "consecutive_failures": self.failures,
            "faults": self.faults,
            "trips": self.trips,
            "last_error": self.last_error,
        }


class Breakers:
    """One breaker per device name, and a way to ask the health monitor for a probe."""

    def __init__(
        self, names: Iterable[str], config: FaultConfig, clock: Clock = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._by_name = {n: Breaker(n, config, clock) for n in names}
        self.wake: Callable[[], None] = lambda: None  # set by the health monitor

    def add(self, name: str) -> None:
        self._by_name.setdefault(name, Breaker(name, self.config, self._clock))

    def __getitem__(self, name: str) -> Breaker:
        return self._by_name[name]

    def allows(self, name: str) -> bool:
        return self._by_name[name].allows

    def failure(self, name: str, error: str) -> None:
        self._by_name[name].failure(error)
        self.wake()
