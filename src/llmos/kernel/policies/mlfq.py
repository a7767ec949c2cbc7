"""Multi-level feedback queue. New requests enter the top level; a request that uses
a whole quantum drops a level (quantum doubles per level; the last level runs to the
end); every `mlfq_boost_s` everything returns to the top, so nothing starves. A
request waiting at a higher level preempts one running at a lower level."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from llmos.kernel.policies.base import Clock, Policy, SchedConfig
from llmos.kernel.request import Request


class MlfqPolicy(Policy):
    name = "mlfq"

    def __init__(self, config: SchedConfig, clock: Clock | None = None) -> None:
        super().__init__(config, clock)
        self._levels: list[deque[Request]] = [deque() for _ in range(config.mlfq_levels)]
        self._running_levels: dict[Request, int] = {}
        self._last_boost = self.clock()
        self._size = 0

    def _boost(self) -> None:
        now = self.clock()
        if now - self._last_boost < self.config.mlfq_boost_s:
            return
        self._last_boost = now
        top = self._levels[0]
        for level in self._levels[1:]:
            for req in level:
                req.level = 0
            top.extend(level)
            level.clear()
        for req in self._running_levels:
            req.level = 0

    def push(self, req: Request) -> None:
        self._boost()
        req.level = min(req.level, len(self._levels) - 1)
        self._levels[req.level].append(req)
        self._size += 1

    def _top(self) -> deque[Request] | None:
        self._boost()
        return next((level for level in self._levels if level), None)

    def pop(self) -> Request | None:
        level = self._top()
        if level is None:
            return None
        self._size -= 1
        return level.popleft()

    def peek(self) -> Request | None:
        level = self._top()
        return level[0] if level else None

    def remove(self, req: Request) -> bool:
        for level in self._levels:
            try:
                level.remove(req)
            except ValueError:
                continue
            self._size -= 1
            return True
        return False

    def __len__(self) -> int:
        return self._size

    def waiting(self) -> list[Request]:
        return [r for level in self._levels for r in level]

    def quantum(self, req: Request) -> int | None:
        if req.level >= len(self._levels) - 1:
            return None
        return int(self.config.quantum * 2**req.level)

    def on_dispatch(self, req: Request) -> None:
        self._running_levels[req] = req.level

    def on_yield(self, req: Request, expired: bool) -> None:
        self._running_levels.pop(req, None)
        if expired:  # used its whole quantum: demote
            req.level = min(req.level + 1, len(self._levels) - 1)

    def on_finish(self, req: Request, was_running: bool) -> None:
        self._running_levels.pop(req, None)

    def choose_victim(self, running: Sequence[Request], head: Request) -> Request | None:
        victim = max(running, key=lambda r: (r.level, r.started_at or 0.0))
        return victim if victim.level > head.level else None
