"""A deterministic in-memory device with the real interface, for fast kernel tests.

Tokens are characters (id = code point). Output is a pure function of the full
prompt (prompt + generated ids), so a resumed generation continues exactly as an
uninterrupted one would, like greedy decoding on a real engine.

Faults can be injected for the kernel's fault-tolerance tests: `fail()` makes the
next generations raise (before any token or after some), `kill()` makes the device
dead (health says no, generations fail, running ones break at their next token)
until `revive()`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from llmos.devices.base import Device
from llmos.errors import DeviceError
from llmos.types import DeviceEvent, Finished, Snapshot, Token

_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


class MockDevice(Device):
    kind = "mock"
    tunable = True

    def __init__(
        self,
        *,
        name: str = "mock0",
        model: str = "mock",
        slots: int = 4,
        context_length: int = 4096,
        token_delay: float = 0.0,
        eos_after: int | None = None,
        capabilities: Iterable[str] = ("text",),
    ) -> None:
        super().__init__(
            name=name,
            model=model,
            slots=slots,
            context_length=context_length,
            capabilities=capabilities,
        )
        self.token_delay = token_delay
        self.eos_after = eos_after
        self.max_in_flight = 0
        self.started_prompts: list[list[int]] = []
        self.started_messages: list[list[dict[str, Any]]] = []  # chats handed over whole
        self.healthy = True
        self.dead = False
        self._faults: list[tuple[int, Exception]] = []  # (after this many tokens, raise)
        self._recent: list[list[int]] = []
        self._live: list[list[int]] = []  # running generations' contexts (its "KV cache")
        self.reconfigurations: list[tuple[int, int, int | None]] = []  # (slots, context, batch)

    # -- fault injection -----------------------------------------------------------
    def fail(self, times: int = 1, after: int = 0, error: Exception | None = None) -> None:
        """The next `times` generations raise `error` (default: a DeviceError) after
        `after` tokens."""
        err = error or DeviceError(f"{self.name}: injected fault")
        self._faults.extend((after, err) for _ in range(times))

    def kill(self) -> None:
        self.dead, self.healthy = True, False

    def revive(self) -> None:
        self.dead, self.healthy = False, True

    async def health(self) -> bool:
        return self.healthy

    async def reconfigure(self, *, slots: int, context_length: int, batch: int | None) -> None:
        """New settings; refused (as a real engine reload would break them) while
        generations run, so tests see the kernel drain the device first."""
        if self.in_flight:
            raise DeviceError(f"{self.name}: reconfigured with {self.in_flight} generations on")
        self.slots, self.context_length, self.batch = slots, context_length, batch
        self.reconfigurations.append((slots, context_length, batch))

    async def engine_metrics(self) -> dict[str, float]:
        held = sum(len(c) for c in self._live)
        size = self.slots * self.context_length
        return {"kv_cache_tokens": float(held), "kv_cache_usage_ratio": min(1.0, held / size)}

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
        prompt = snapshot.prompt_ids
        if snapshot.messages is not None:  # a chat handed over whole (e.g. with image parts)
            self.started_messages.append(snapshot.messages)
            prompt = [ord(c) for c in json.dumps(snapshot.messages)]
        context = prompt + snapshot.generated_ids
        start = len(context)
        cached = self._cached(context)
        self.started_prompts.append(list(context))
        fault = self._faults.pop(0) if self._faults else None
        self._live.append(context)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for made in range(snapshot.budget):
                if self.dead:
                    raise DeviceError(f"{self.name} is down")
                if fault is not None and made == fault[0]:
                    raise fault[1]
                generated = len(context) - len(prompt)
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
            self._live.remove(context)
            self._recent.append(context)
            del self._recent[:-64]
            self.in_flight -= 1
