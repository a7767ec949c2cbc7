"""A deterministic in-memory device with the real interface, for fast kernel tests.

Tokens are characters (id = code point). Output is a pure function of the full
prompt (prompt + generated ids), so a resumed generation continues exactly as an
uninterrupted one would, like greedy decoding on a real engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from llmos.devices.base import Device
from llmos.types import DeviceEvent, Finished, Snapshot, Token

_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


class MockDevice(Device):
    kind = "mock"

    def __init__(
        self,
        *,
        name: str = "mock0",
        model: str = "mock",
        slots: int = 4,
        context_length: int = 4096,
        token_delay: float = 0.0,
        eos_after: int | None = None,
    ) -> None:
        super().__init__(name=name, model=model, slots=slots, context_length=context_length)
        self.token_delay = token_delay
        self.eos_after = eos_after
        self.max_in_flight = 0
        self.started_prompts: list[list[int]] = []
        self.healthy = True
        self._recent: list[list[int]] = []

    async def health(self) -> bool:
        return self.healthy

    async def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    async def detokenize(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        parts = [f"<{m['role']}>{m.get('content') or ''}\n" for m in messages]
        return "".join(parts) + "<assistant>"

    @staticmethod
    def next_id(context: list[int]) -> int:
        return ord(_ALPHABET[(sum(context) * 31 + len(context)) % len(_ALPHABET)])

    def _cached(self, context: list[int]) -> int:
        """Longest prefix shared with a recent generation (a stand-in prefix cache)."""
        best = 0
        for seen in self._recent:
            n = 0
            for a, b in zip(seen, context, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return min(best, max(0, len(context) - 1))

    async def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        context = snapshot.prompt_ids + snapshot.generated_ids
        start = len(context)
        cached = self._cached(context)
        self.started_prompts.append(list(context))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(snapshot.budget):
                generated = len(context) - len(snapshot.prompt_ids)
                eos = self.eos_after is not None and not snapshot.params.ignore_eos
                if eos and generated >= (self.eos_after or 0):
                    yield Finished("stop", prompt_tokens=start, cached_tokens=cached)
                    return
                await asyncio.sleep(self.token_delay)
                tid = self.next_id(context)
                context.append(tid)
                yield Token(id=tid, text=chr(tid), piece=chr(tid), logprob=-0.5)
            yield Finished("length", prompt_tokens=start, cached_tokens=cached)
        finally:
            self._recent.append(context)
            del self._recent[:-64]
            self.in_flight -= 1
