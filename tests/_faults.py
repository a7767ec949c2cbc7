"""Shared by the device-fault tests: mock devices that record their breaker's state
at every dispatch, a kernel booted with quick health checks, and small waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.devices import Device, MockDevice
from llmos.kernel import Caller, Done, Kernel, Request
from llmos.kernel.breaker import BreakerState
from llmos.params import Settings

ADMIN = "adm"
# Quick health checks and cooldowns, so that every test is over in well under a second.
FAST: dict[str, Any] = {
    "health_interval_s": 0.02,
    "health_timeout_s": 2.0,
    "breaker_cooldown_s": 0.05,
    "device_wait_s": 10.0,
}
CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


class Watched(MockDevice):
    """A mock device; `boot` makes it record its breaker's state at every dispatch."""

    def __init__(self, name: str, *, slots: int = 1, token_delay: float = 0.001) -> None:
        super().__init__(name=name, slots=slots, token_delay=token_delay)
        self.states: list[BreakerState] = []  # the breaker, each time a request was sent


class TextOnly(Watched):
    """A device that cannot resume from token ids (like an HTTP server in text mode)."""

    @property
    def resumable(self) -> bool:
        return False


async def boot(home: Path, devices: list[MockDevice], **settings: Any) -> tuple[Kernel, Caller]:
    kernel = Kernel(Settings(home=home, admin_token=ADMIN, **{**FAST, **settings}), devices)
    scheduler = kernel.scheduler
    dispatch = scheduler._dispatch

    def watched_dispatch(req: Request, dev: Device) -> None:
        if isinstance(dev, Watched):
            dev.states.append(scheduler.breakers[dev.name].state)
        dispatch(req, dev)

    scheduler._dispatch = watched_dispatch  # type: ignore[method-assign]
    await kernel.start()
    return kernel, kernel.authenticate(ADMIN)


def chat_args(n: int, text: str = "hello", **kw: Any) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": n, **kw}


async def ask(kernel: Kernel, who: Caller, n: int = 16, text: str = "hello", **kw: Any) -> Request:
    req: Request = await kernel.call("llm.chat", who, chat_args(n, text, **kw))
    return req


async def done(req: Request, timeout: float = 20.0) -> Done:
    async def drain() -> Done:
        while True:
            event = await req.events.get()
            if isinstance(event, Done):
                return event

    return await asyncio.wait_for(drain(), timeout)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def reference(req: Request) -> str:
    """What an uninterrupted greedy run of this request produces."""
    ctx, out = list(req.snapshot.prompt_ids), []
    for _ in range(req.snapshot.params.max_tokens):
        tid = MockDevice.next_id(ctx)
        ctx.append(tid)
        out.append(chr(tid))
    return "".join(out)


def assert_books_balance(kernel: Kernel) -> None:
    assert kernel.scheduler.num_running() == 0 and kernel.scheduler.num_waiting() == 0
    assert kernel.admission.waiting == 0
    assert all(p.running == 0 and p.waiting == 0 for p in kernel.procs.list())
