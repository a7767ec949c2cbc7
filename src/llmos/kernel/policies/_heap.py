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
        # A waiting request -> the sequence number of its one current entry: a
        # request removed and pushed again (renice, resume) leaves a stale entry
        # behind, which must not count.
        self._live: dict[Request, int] = {}
        self._seq = itertools.count()

    def push(self, key: float, req: Request) -> None:
        seq = next(self._seq)
        heapq.heappush(self._heap, (key, seq, req))
        self._live[req] = seq

    def _current(self, entry: tuple[float, int, Request]) -> bool:
        return self._live.get(entry[2]) == entry[1]

    def _skip_dead(self) -> None:
        while self._heap and not self._current(self._heap[0]):
            heapq.heappop(self._heap)

    def pop(self) -> Request | None:
        self._skip_dead()
        if not self._heap:
            return None
        req = heapq.heappop(self._heap)[2]
        del self._live[req]
        return req

    def peek(self) -> Request | None:
        self._skip_dead()
        return self._heap[0][2] if self._heap else None

    def peek_key(self) -> float | None:
        self._skip_dead()
        return self._heap[0][0] if self._heap else None

    def remove(self, req: Request) -> bool:
        if self._live.pop(req, None) is None:
            return False
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._heap = [e for e in self._heap if self._current(e)]
            heapq.heapify(self._heap)
        return True

    def __len__(self) -> int:
        return len(self._live)

    def ordered(self) -> list[Request]:
        return [e[2] for e in sorted(self._heap) if self._current(e)]


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
