"""Response bodies of the OpenAI-compatible routes, for the OpenAPI schema only.

The routes build these objects as dicts (openai_format.py); the models here document
them (`responses=` on the routes, never `response_model=`, so nothing is re-validated
or filtered on the way out). Extra fields are allowed, as in OpenAI's own schema;
tests/test_fuzz_api.py checks real responses against these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ChatMessage(_Open):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None


class ChatChoice(_Open):
    index: int
    message: ChatMessage
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    llmos: dict[str, Any] | None = None  # {"media": [...]}: how image/audio parts were taken


class CompletionChoice(_Open):
    text: str
    index: int
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class Completion(_Open):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Model(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    capabilities: list[str] | None = None  # llmos: text, vision, audio_in, ... (its devices')


class ModelList(_Open):
    object: Literal["list"]
    data: list[Model]


_SSE_EVENT = {  # one server-sent event, as OpenAPI 3.2 describes event streams
    "type": "object",
    "description": "with `stream: true`: `data: {chunk}` events, then `data: [DONE]`",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
    "required": ["data"],
}
_SSE = {"text/event-stream": {"schema": _SSE_EVENT, "itemSchema": _SSE_EVENT}}


def streamed(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that answers JSON, or a server-sent event stream."""
    return {200: {"model": model, "content": _SSE}}
