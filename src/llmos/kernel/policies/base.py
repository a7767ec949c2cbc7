"""The policy interface: a policy decides order, quanta and victims, nothing else.
The mechanism (run queue ownership, slots, dispatch, preemption) is the scheduler's.

A policy sees requests only through these verbs; its own bookkeeping (levels,
counters, predictions) stays inside it."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmos.kernel.request import Request

Clock = Callable[[], float]


class Predictor(Protocol):
    """Predicts a request's total output tokens (for shortest-job-first)."""

    def predict(self, req: Request) -> float: ...


@dataclass
class SchedConfig:
    """Knobs shared by the policies; validated by `validate()`."""

    quantum: int = 32  # rr's quantum and mlfq's base quantum, in generated tokens
    aging_s: float = 2.0  # waiting this long is worth one priority level (priority, sjf)
    sjf_aging_tokens_per_s: float = 64.0  # sjf: each second waited counts as this many tokens less
    mlfq_levels: int = 3
    mlfq_boost_s: float = 5.0  # every boost_s all requests return to the top level
    fair_weights: dict[str, float] = field(default_factory=dict)  # owner -> weight (default 1)
    fair_input_weight: float = 1.0  # VTC: input tokens cost this much, output tokens 2x
    fair_output_weight: float = 2.0
    preempt_margin: int = 4  # priority: preempt only for a head this many levels better
    sjf_preempt_factor: float = 4.0  # sjf: preempt a job predicted this many times longer
    predictor: Predictor | None = None  # sjf's output-length model (None: heuristic)

    def validate(self) -> None:
        from llmos.errors import InvalidRequest

        if not 1 <= self.quantum <= 1 << 20:
            raise InvalidRequest("quantum must be between 1 and 1048576 tokens", param="quantum")
        if not 0 < self.aging_s <= 86400:
            raise InvalidRequest("aging_s must be in (0, 86400]", param="aging_s")
        if not 1 <= self.mlfq_levels <= 8:
            raise InvalidRequest("mlfq_levels must be 1..8", param="mlfq_levels")
        if not 0 < self.mlfq_boost_s <= 86400:
            raise InvalidRequest("mlfq_boost_s must be in (0, 86400]", param="mlfq_boost_s")
        for owner, w in self.fair_weights.items():
            if not 0 < w <= 1000:
                raise InvalidRequest(f"weight of {owner!r} must be in (0, 1000]", param="weights")


class Policy(abc.ABC):
    name: str = "policy"

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or time.monotonic

    @abc.abstractmethod
    def push(self, req: Request) -> None:
        """A request becomes runnable (new, or preempted and put back)."""

    @abc.abstractmethod
    def pop(self) -> Request | None:
        """The next request to run, removed from the queue; None if empty."""

    @abc.abstractmethod
    def peek(self) -> Request | None:
        """The request `pop` would return, left in place."""

    @abc.abstractmethod
    def remove(self, req: Request) -> bool:
        """Take a waiting request off the queue (killed, cancelled). True if it was there."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def waiting(self) -> list[Request]:
        """The queue, roughly in the order the policy would run it (for display)."""

    def quantum(self, req: Request) -> int | None:
        """Tokens `req` may generate in this dispatch before it yields; None = to the end."""
        return None

    def choose_victim(self, running: Sequence[Request], head: Request) -> Request | None:
        """Which running request, if any, to preempt so that `head` can run."""
        return None

    def on_dispatch(self, req: Request) -> None:  # noqa: B027 - optional hook
        """`req` got a slot."""

    def on_token(self, req: Request) -> None:  # noqa: B027 - optional hook
        """`req` generated one token."""

    def on_yield(self, req: Request, expired: bool) -> None:  # noqa: B027 - optional hook
        """`req` left its slot unfinished: its quantum expired, or it was preempted."""

    def on_finish(self, req: Request, was_running: bool) -> None:  # noqa: B027 - optional hook
        """`req` ended (any way); `was_running`: it held a slot until now."""
