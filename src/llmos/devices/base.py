"""The device interface: one small contract every engine driver implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from llmos.errors import DeviceError, InvalidRequest
from llmos.params import CAPABILITIES
from llmos.types import DeviceEvent, DeviceInfo, Snapshot


def capability_set(names: Iterable[str], param: str = "capabilities") -> frozenset[str]:
    """Checked capability names (params.CAPABILITIES: what a device takes and makes; a
    chat needs `text`, image parts `vision`, audio parts `audio_in`, as the kernel
    routes by them: kernel/capabilities.py). InvalidRequest naming an unknown one."""
    caps = frozenset(names)
    unknown = sorted(caps - set(CAPABILITIES))
    if unknown or not caps:
        what = f"unknown capability {unknown[0]!r}" if unknown else "no capability given"
        raise InvalidRequest(f"{what}; choose from {', '.join(CAPABILITIES)}", param=param)
    return caps


class Device(abc.ABC):
    """An LLM engine with `slots` parallel sequences of `context_length` tokens each.

    `generate` streams Token events and ends with one Finished event. Closing the
    iterator (or cancelling the task consuming it) stops the generation at the next
    token; the slot is free once the iterator's close returns.
    """

    kind: str = "device"
    tunable: bool = False  # can `reconfigure` change its slots, context and batch?
    batch: int | None = None  # prompt tokens processed per step; None: the engine's default
    train_context: int | None = None  # the model's training context, where the engine says

    def __init__(
        self,
        *,
        name: str,
        model: str,
        slots: int,
        context_length: int,
        capabilities: Iterable[str] = ("text",),
    ) -> None:
        self.name = name
        self.model = model
        self.slots = slots
        self.context_length = context_length
        self.capabilities = capability_set(capabilities)
        self.in_flight = 0

    @property
    def resumable(self) -> bool:
        """Can a generation resume from a snapshot of token ids (a context switch)?"""
        return True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load or connect. Raise DeviceError with a clear message on failure."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine."""

    async def reconfigure(self, *, slots: int, context_length: int, batch: int | None) -> None:
        """Run with these settings from now on (the auto-tuner, kernel/tuner.py). Called
        only while nothing runs on the device; on failure the old settings stay."""
        raise DeviceError(f"device {self.name} ({self.kind}) is not tunable")

    @abc.abstractmethod
    async def health(self) -> bool: ...

    @abc.abstractmethod
    async def tokenize(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    async def detokenize(self, ids: list[int]) -> str: ...

    @abc.abstractmethod
    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Apply the model's chat template; returns the prompt text (with special tokens)."""

    @abc.abstractmethod
    def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]: ...

    def details(self) -> dict[str, Any]:
        return {}

    async def engine_metrics(self) -> dict[str, float]:
        """The engine's own figures where it reports them: `kv_cache_usage_ratio` (0..1,
        the KV cache held by running sequences), `kv_cache_tokens`, and its counters by
        name. {} when it reports none or cannot be reached right now; never raises."""
        return {}

    async def info(self) -> DeviceInfo:
        return DeviceInfo(
            name=self.name,
            kind=self.kind,
            model=self.model,
            slots=self.slots,
            context_length=self.context_length,
            healthy=await self.health(),
            in_flight=self.in_flight,
            details=self.details(),
            capabilities=tuple(c for c in CAPABILITIES if c in self.capabilities),
        )
