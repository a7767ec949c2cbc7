"""Shared by the llama.cpp drivers: the request body for a token-id completion and the
parsing of OpenAI-style completion chunks (with logprobs, which carry token ids); and
the same for a chat handed over whole as messages (text pieces, no ids)."""

from __future__ import annotations

import math
from typing import Any

from llmos.errors import ContextOverflow, DeviceError, InvalidRequest
from llmos.types import DeviceEvent, Finished, Snapshot, Token, TopLogprob


def completion_body(snapshot: Snapshot, model: str | None = None) -> dict[str, Any]:
    """A streaming /v1/completions body that resumes `snapshot` where it stands."""
    p = snapshot.params
    body: dict[str, Any] = {
        "prompt": snapshot.prompt_ids + snapshot.generated_ids,
        "max_tokens": snapshot.budget,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "stream": True,
        # logprobs carry the generated token ids; at least one is always asked for.
        "logprobs": max(1, p.top_logprobs),
        "cache_prompt": True,
    }
    if not p.logprobs:
        # Ids only: the sampler's own candidates are free, while true logprobs cost
        # a softmax over the whole vocabulary per token (about 6% of throughput).
        body["post_sampling_probs"] = True
    if model is not None:
        body["model"] = model
    if p.seed is not None:
        body["seed"] = p.seed
    if p.json_schema is not None:
        body["json_schema"] = p.json_schema
    if p.ignore_eos:
        body["ignore_eos"] = True
    return body


def _logprob(entry: dict[str, Any]) -> float | None:
    """`logprob`, or the log of `prob` (post-sampling form)."""
    if entry.get("logprob") is not None:
        return float(entry["logprob"])
    prob = entry.get("prob")
    if prob is None:
        return None
    return math.log(prob) if prob > 0 else -math.inf


def _top(entry: dict[str, Any]) -> tuple[TopLogprob, ...]:
    return tuple(
        TopLogprob(
            id=int(t.get("id", -1)),
            token=str(t.get("token", "")),
            logprob=_logprob(t) or 0.0,
            bytes=tuple(t["bytes"]) if t.get("bytes") is not None else None,
        )
        for t in entry.get("top_logprobs") or entry.get("top_probs") or ()
    )


def raise_for_error(chunk: dict[str, Any]) -> None:
    err = chunk.get("error")
    if not err:
        return
    if isinstance(err, dict):
        message = str(err.get("message", err))
        etype = str(err.get("type", ""))
        code = err.get("code")
    else:
        message, etype, code = str(err), "", None
    if etype == "exceed_context_size_error" or ("context" in message and "exceed" in message):
        raise ContextOverflow(message, param="messages")
    if etype == "invalid_request_error" or code == 400:
        raise InvalidRequest(f"engine rejected the request: {message}")
    raise DeviceError(f"engine error: {message}")


def parse_chunk(chunk: dict[str, Any]) -> list[DeviceEvent]:
    """Tokens in one streamed chunk, then Finished if the chunk ends the generation."""
    raise_for_error(chunk)
    events: list[DeviceEvent] = []
    choices = chunk.get("choices") or []
    if choices:
        choice = choices[0]
        text = choice.get("text") or ""
        entries = (choice.get("logprobs") or {}).get("content") or []
        for i, e in enumerate(entries):
            last = i == len(entries) - 1
            events.append(
                Token(
                    id=int(e["id"]),
                    text=text if last else "",
                    piece=str(e.get("token", "")),
                    logprob=_logprob(e),
                    bytes=tuple(e["bytes"]) if e.get("bytes") is not None else None,
                    top=_top(e),
                )
            )
        reason = choice.get("finish_reason")
        if reason:
            usage = chunk.get("usage") or {}
            timings = chunk.get("timings") or {}
            details = usage.get("prompt_tokens_details") or {}
            events.append(
                Finished(
                    reason="length" if reason == "length" else "stop",
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    cached_tokens=int(timings.get("cache_n", details.get("cached_tokens", 0))),
                )
            )
    return events


def chat_body(snapshot: Snapshot, model: str | None = None) -> dict[str, Any]:
    """A streaming /v1/chat/completions body for a chat handed over whole (a device
    without token ids, or one given image or audio parts): not resumable."""
    p = snapshot.params
    body: dict[str, Any] = {
        "messages": snapshot.messages or [],
        "max_tokens": snapshot.budget,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model is not None:
        body["model"] = model
    if p.seed is not None:
        body["seed"] = p.seed
    if p.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": p.json_schema},
        }
    return body


def parse_chat_chunk(chunk: dict[str, Any]) -> list[DeviceEvent]:
    """Text pieces (no token ids) in one chat.completion.chunk, then Finished if it
    ends the generation."""
    raise_for_error(chunk)
    events: list[DeviceEvent] = []
    for choice in chunk.get("choices") or []:
        text = (choice.get("delta") or {}).get("content") or ""
        if text:
            events.append(Token(id=-1, text=text, piece=text))
        if choice.get("finish_reason"):
            usage = chunk.get("usage") or {}
            reason = "length" if choice["finish_reason"] == "length" else "stop"
            events.append(Finished(reason, prompt_tokens=int(usage.get("prompt_tokens", 0))))
    return events
