"""First come, first served; never preempts."""

from __future__ import annotations

from collections import deque

from llmos.kernel.policies.base import Clock, Policy, SchedConfig
from llmos.kernel.request import Request


class FifoPolicy(Policy):
    name = "fifo"

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        self._queue: deque[Request] = deque()

    def push(self, req: Request) -> None:
        self._queue.append(req)

    def pop(self) -> Request | None:
        return self._queue.popleft() if self._queue else None

    def peek(self) -> Request | None:
        return self._queue[0] if self._queue else None

    def remove(self, req: Request) -> bool:
        try:
            self._queue.remove(req)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._queue)

    def waiting(self) -> list[Request]:
        return list(self._queue)
