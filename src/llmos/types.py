"""Plain dataclasses passed between layers (devices <-> kernel <-> api)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one generation. Greedy when temperature == 0."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    json_schema: dict[str, Any] | None = None
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks, trace replay)


@dataclass
class Snapshot:
    """Everything needed to (re)start a generation on any slot of the same model:
    the device decodes from prompt_ids + generated_ids for the remaining budget."""

    prompt_ids: list[int]
    params: SamplingParams
    generated_ids: list[int] = field(default_factory=list)
    # Only for devices that cannot take token ids (text mode): the chat itself.
    messages: list[dict[str, Any]] | None = None
    # Tokens this dispatch may generate before yielding the slot (a quantum); None: all.
    limit: int | None = None

    @property
    def remaining(self) -> int:
        return self.params.max_tokens - len(self.generated_ids)

    @property
    def budget(self) -> int:
        """Tokens to ask the device for in this dispatch."""
        return self.remaining if self.limit is None else min(self.remaining, self.limit)


@dataclass(frozen=True)
class TopLogprob:
    id: int
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Token:
    """One generated token. `text` is the decoded text this token completes (may be
    empty when a multi-byte character spans several tokens)."""

    id: int
    text: str
    piece: str = ""
    logprob: float | None = None
    bytes: tuple[int, ...] | None = None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The device ended the generation: reason is 'stop' (end of sequence) or 'length'."""

    reason: str
    prompt_tokens: int = 0
    cached_tokens: int = 0


DeviceEvent = Token | Finished


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    kind: str
    model: str
    slots: int
    context_length: int
    healthy: bool
    in_flight: int
    details: dict[str, Any] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ("text",)  # devices/base.py's CAPABILITIES it has
