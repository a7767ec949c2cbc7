"""A priority queue with lazy removal, shared by the key-ordered policies.

Keys must not change while a request waits; policies that age requests choose keys
where aging is a constant shift for everyone (so order by the key is order by the
aged score). O(log n) push/pop; removal marks and skips."""

from __future__ import annotations

import heapq
import itertools

from llmos.kernel.policies.base import Clock, Policy, SchedConfig
from llmos.kernel.request import Request


class KeyedQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Request]] = []
        self._live: set[Request] = set()
        self._seq = itertools.count()

    def push(self, key: float, req: Request) -> None:
        heapq.heappush(self._heap, (key, next(self._seq), req))
        self._live.add(req)

    def _skip_dead(self) -> None:
        while self._heap and self._heap[0][2] not in self._live:
            heapq.heappop(self._heap)

    def pop(self) -> Request | None:
        self._skip_dead()
        if not self._heap:
            return None
        req = heapq.heappop(self._heap)[2]
        self._live.discard(req)
        return req

    def peek(self) -> Request | None:
        self._skip_dead()
        return self._heap[0][2] if self._heap else None

    def peek_key(self) -> float | None:
        self._skip_dead()
        return self._heap[0][0] if self._heap else None

    def remove(self, req: Request) -> bool:
        if req not in self._live:
            return False
        self._live.discard(req)
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._heap = [e for e in self._heap if e[2] in self._live]
            heapq.heapify(self._heap)
        return True

    def __len__(self) -> int:
        return len(self._live)

    def ordered(self) -> list[Request]:
        return [e[2] for e in sorted(self._heap) if e[2] in self._live]


class KeyedPolicy(Policy):
    """A policy whose queue is ordered by a fixed key per request (`key`)."""

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        self._q = KeyedQueue()

    def key(self, req: Request) -> float:
        raise NotImplementedError

    def push(self, req: Request) -> None:
        self._q.push(self.key(req), req)

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
