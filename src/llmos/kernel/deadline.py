"""Request deadlines: every LLM request must finish within `timeout` seconds of being
queued, waiting time included (this also bounds the time a request may wait for a
slot). At the deadline the kernel cancels it: a waiting request fails at once, a
running one stops at its next token and frees its slot. The client gets Timeout
(504), or, on a stream, an error event and then `[DONE]`.

Invariant: a request holds a timer handle exactly while it is armed and unfinished;
the kernel's finish listener disarms it, so finished requests leave no timers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from llmos.errors import LlmosError, Timeout
from llmos.kernel.request import ReqState, Request

Cancel = Callable[[Request, LlmosError], None]


class Deadlines:
    def __init__(self, timeout: float, cancel: Cancel) -> None:
        self.timeout = timeout  # seconds; 0 = no deadline
        self.cancel = cancel
        self.timers: dict[Request, asyncio.TimerHandle] = {}
        self.expired = 0

    def arm(self, req: Request) -> None:
        """Start `req`'s clock (called once, when it is first queued)."""
        if self.timeout <= 0 or req.state.finished:
            return
        loop = asyncio.get_running_loop()
        self.timers[req] = loop.call_later(self.timeout, self._expire, req, self.timeout)

    def disarm(self, req: Request) -> None:
        handle = self.timers.pop(req, None)
        if handle is not None:
            handle.cancel()

    def _expire(self, req: Request, limit: float) -> None:
        self.timers.pop(req, None)
        if req.state.finished:
            return
        self.expired += 1
        where = (
            "while waiting for a slot"
            if req.state in (ReqState.WAITING, ReqState.PREEMPTED) and not req.output_tokens
            else f"after {req.output_tokens} generated tokens"
        )
        self.cancel(
            req,
            Timeout(f"the request did not finish within its {limit:g} s deadline ({where})"),
        )
