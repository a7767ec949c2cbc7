"""Fair share across owners with virtual token counters (VTC, "Fairness in Serving
Large Language Models", OSDI'24). Each owner's counter grows by the weighted tokens
served to it (input at dispatch, output per token) divided by the owner's weight;
the owner with the smallest counter runs next. An owner that becomes backlogged is
lifted to the smallest counter among active owners, so idling earns no credit.
Non-preemptive, like VTC: the gap between backlogged owners stays bounded by the
largest request."""

from __future__ import annotations

import heapq
from collections import defaultdict, deque

from llmos.kernel.policies.base import Clock, Policy, SchedConfig
from llmos.kernel.request import Request


class FairPolicy(Policy):
    name = "fair"

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        self.counters: dict[str, float] = defaultdict(float)
        self._queues: dict[str, deque[Request]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)
        self._heap: list[tuple[float, str]] = []  # (counter when pushed, owner)
        self._key: dict[str, float] = {}  # owner -> key of its live heap entry
        self._size = 0

    def _weight(self, owner: str) -> float:
        return self.config.fair_weights.get(owner, 1.0)

    def _active(self, owner: str) -> bool:
        return bool(self._queues[owner]) or self._running[owner] > 0

    def push(self, req: Request) -> None:
        owner = req.owner
        if not self._active(owner):
            active = [self.counters[o] for o in self._key]
            if active:
                self.counters[owner] = max(self.counters[owner], min(active))
        self._queues[owner].append(req)
        self._size += 1
        if owner not in self._key:
            self._key[owner] = self.counters[owner]
            heapq.heappush(self._heap, (self.counters[owner], owner))

    def _head_owner(self) -> str | None:
        while self._heap:
            key, owner = self._heap[0]
            if self._key.get(owner) != key:  # a stale duplicate
                heapq.heappop(self._heap)
            elif not self._queues[owner]:
                heapq.heappop(self._heap)
                del self._key[owner]
            elif key < self.counters[owner]:  # served since pushed: re-key
                heapq.heappop(self._heap)
                self._key[owner] = self.counters[owner]
                heapq.heappush(self._heap, (self.counters[owner], owner))
            else:
                return owner
        return None

    def pop(self) -> Request | None:
        owner = self._head_owner()
        if owner is None:
            return None
        self._size -= 1
        return self._queues[owner].popleft()

    def peek(self) -> Request | None:
        owner = self._head_owner()
        return self._queues[owner][0] if owner is not None else None

    def remove(self, req: Request) -> bool:
        try:
            self._queues[req.owner].remove(req)
        except ValueError:
            return False
        self._size -= 1
        return True

    def __len__(self) -> int:
        return self._size

    def waiting(self) -> list[Request]:
        return sorted(
            (r for q in self._queues.values() for r in q), key=lambda r: self.counters[r.owner]
        )

    def on_dispatch(self, req: Request) -> None:
        self._running[req.owner] += 1
        if req.dispatches == 1:
            cost = self.config.fair_input_weight * len(req.snapshot.prompt_ids)
            self.counters[req.owner] += cost / self._weight(req.owner)

    def on_token(self, req: Request) -> None:
        self.counters[req.owner] += self.config.fair_output_weight / self._weight(req.owner)

    def on_yield(self, req: Request, expired: bool) -> None:
        self._running[req.owner] -= 1

    def on_finish(self, req: Request, was_running: bool) -> None:
        if was_running:
            self._running[req.owner] -= 1
