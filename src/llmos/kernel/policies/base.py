"""The policy interface: a policy decides order and victims, nothing else.
The mechanism (run queue ownership, slots, dispatch) lives in the scheduler."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from llmos.kernel.request import Request


class Policy(abc.ABC):
    name: str = "policy"

    @abc.abstractmethod
    def push(self, req: Request) -> None:
        """A request becomes runnable (new, or preempted and put back)."""

    @abc.abstractmethod
    def pop(self) -> Request | None:
        """The next request to run, removed from the queue; None if empty."""

    @abc.abstractmethod
    def remove(self, req: Request) -> bool:
        """Take a waiting request off the queue (killed, cancelled). True if it was there."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def waiting(self) -> list[Request]:
        """The queue in the order the policy would run it."""

    def choose_victim(
        self, running: Sequence[Request], waiting: Sequence[Request]
    ) -> Request | None:
        """Which running request, if any, to preempt for a waiting one. Default: none."""
        return None
