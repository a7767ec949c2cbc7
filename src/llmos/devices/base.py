"""The device interface: one small contract every engine driver implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from typing import Any

from llmos.types import DeviceEvent, DeviceInfo, Snapshot


class Device(abc.ABC):
    """An LLM engine with `slots` parallel sequences of `context_length` tokens each.

    `generate` streams Token events and ends with one Finished event. Closing the
    iterator (or cancelling the task consuming it) stops the generation at the next
    token; the slot is free once the iterator's close returns.
    """

    kind: str = "device"

    def __init__(self, *, name: str, model: str, slots: int, context_length: int) -> None:
        self.name = name
        self.model = model
        self.slots = slots
        self.context_length = context_length
        self.in_flight = 0

    @property
    def resumable(self) -> bool:
        """Can a generation resume from a snapshot of token ids (a context switch)?"""
        return True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load or connect. Raise DeviceError with a clear message on failure."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine."""

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
        )
