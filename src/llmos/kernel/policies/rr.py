"""Round robin: FIFO order, but a request yields its slot after `quantum` tokens
and goes to the back of the queue."""

from __future__ import annotations

from llmos.kernel.policies.fifo import FifoPolicy
from llmos.kernel.request import Request


class RoundRobinPolicy(FifoPolicy):
    name = "rr"

    def quantum(self, req: Request) -> int | None:
        return self.config.quantum
