"""Kernel requests and events rendered as OpenAI's published response objects:
chat.completion, chat.completion.chunk, text_completion — field for field."""

from __future__ import annotations

import time
import uuid
from typing import Any

from llmos.kernel import Delta, Request
from llmos.kernel.toolcalls import Reply, ToolPlan, interpret
from llmos.types import Token, TopLogprob

FINGERPRINT = "fp_llmos"


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def usage(req: Request) -> dict[str, Any]:
    return usage_of(req.prompt_tokens, req.output_tokens, req.cached_tokens)


def usage_of(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _bytes(t: Token | TopLogprob, text: str) -> list[int]:
    return list(t.bytes) if t.bytes is not None else list(text.encode())


def chat_logprobs(tokens: tuple[Token, ...] | list[Token], k: int) -> dict[str, Any]:
    content = [
        {
            "token": t.piece,
            "logprob": t.logprob if t.logprob is not None else 0.0,
            "bytes": _bytes(t, t.piece),
            "top_logprobs": [
                {"token": a.token, "logprob": a.logprob, "bytes": _bytes(a, a.token)}
                for a in t.top[:k]
            ],
        }
        for t in tokens
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(tokens: list[Token], k: int, offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t.piece)
    return {
        "tokens": [t.piece for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{a.token: a.logprob for a in t.top[:k]} for t in tokens],
        "text_offset": offsets,
    }


def _base(obj: str, id_: str, created: int, model: str) -> dict[str, Any]:
    return {
        "id": id_,
        "object": obj,
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }


def completion_body(
    kind: str,
    id_: str,
    created: int,
    model: str,
    text: str | None,
    finish_reason: str | None,
    logprobs: tuple[list[Token], int] | None,
    usage_: dict[str, Any],
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole chat.completion or text_completion object; `logprobs`: the tokens
    and how many alternatives to show, if the request asked for them; `tool_calls`:
    the calls a chat answer makes (its content is then null)."""
    if kind == "chat":
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": [],
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": chat_logprobs(*logprobs) if logprobs else None,
            "finish_reason": finish_reason,
        }
        body = _base("chat.completion", id_, created, model)
        body["service_tier"] = "default"
    else:
        choice = {
            "text": text or "",
            "index": 0,
            "logprobs": completion_logprobs(*logprobs, 0) if logprobs else None,
            "finish_reason": finish_reason,
        }
        body = _base("text_completion", id_, created, model)
    body["choices"] = [choice]
    body["usage"] = usage_
    return body


def openai_reply(reply: Reply) -> dict[str, Any]:
    """A tool plan's answer: content, tool_calls (OpenAI's form), finish_reason."""
    return {
        "content": reply.content,
        "tool_calls": [c.to_openai() for c in reply.tool_calls],
        "finish_reason": reply.finish_reason,
    }


def reply_body(
    id_: str, created: int, model: str, reply: dict[str, Any], usage_: dict[str, Any]
) -> dict[str, Any]:
    """A chat.completion holding a tool plan's answer (`openai_reply`'s form)."""
    return completion_body(
        "chat",
        id_,
        created,
        model,
        reply["content"],
        reply["finish_reason"],
        None,
        usage_,
        reply["tool_calls"],
    )


def chat_chunk(
    id_: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    logprobs: Any,
    finish: str | None,
    usage_field: bool,
) -> dict[str, Any]:
    body = _base("chat.completion.chunk", id_, created, model)
    body["service_tier"] = "default"
    body["choices"] = [
        {"index": 0, "delta": delta or {}, "logprobs": logprobs, "finish_reason": finish}
    ]
    if usage_field:
        body["usage"] = None
    return body


def reply_chunks(
    id_: str, created: int, model: str, reply: dict[str, Any], usage_field: bool
) -> list[dict[str, Any]]:
    """A buffered answer of a tool plan, streamed: the role, one delta holding the
    whole content or every tool call (id, name and all the arguments at once), and
    the chunk with the finish reason."""
    delta: dict[str, Any] = {"content": reply["content"]}
    if reply["tool_calls"]:
        delta = {"tool_calls": [{"index": i, **c} for i, c in enumerate(reply["tool_calls"])]}
    first = {"role": "assistant", "content": "" if reply["content"] is not None else None}
    return [
        chat_chunk(id_, created, model, {**first, "refusal": None}, None, None, usage_field),
        chat_chunk(id_, created, model, delta, None, None, usage_field),
        chat_chunk(id_, created, model, {}, None, reply["finish_reason"], usage_field),
    ]


class Renderer:
    """Builds the response (or the stream's chunks) for one request. With a tool
    plan that constrains the answer, the answer is sent whole when it is complete
    (`buffered`): it is JSON until then, and only then maps to content or calls."""

    def __init__(self, req: Request, model: str, plan: ToolPlan | None = None) -> None:
        self.req = req
        self.plan = plan if plan is not None and plan.constrained else None
        self.model = model
        self.id = new_id(req.kind)
        self.created = int(time.time())
        p = req.snapshot.params
        self.want_logprobs = p.logprobs
        self.k = p.top_logprobs
        self.tokens: list[Token] = []
        self.text_offset = 0

    def _base(self, obj: str) -> dict[str, Any]:
        return _base(obj, self.id, self.created, self.model)

    @property
    def buffered(self) -> bool:
        return self.plan is not None

    def reply(self) -> dict[str, Any]:
        return openai_reply(interpret(self.plan, self.req.text, self.req.finish_reason, self.id))

    # -- whole responses -----------------------------------------------------------
    def response(self, tokens: list[Token]) -> dict[str, Any]:
        req = self.req
        if self.buffered:
            return self._noted(
                reply_body(self.id, self.created, self.model, self.reply(), usage(req))
            )
        body = completion_body(
            req.kind,
            self.id,
            self.created,
            self.model,
            req.text,
            req.finish_reason,
            (tokens, self.k) if self.want_logprobs else None,
            usage(req),
        )
        return self._noted(body)

    def _noted(self, body: dict[str, Any]) -> dict[str, Any]:
        """llmos's extension: what was done with image and audio parts (kernel/media_parts.py)."""
        if self.req.media:
            body["llmos"] = {"media": self.req.media}
        return body

    # -- stream chunks -------------------------------------------------------------
    def _chunk(
        self,
        delta: dict[str, Any] | None,
        text: str,
        logprobs: Any,
        finish: str | None,
        usage_field: bool,
    ) -> dict[str, Any]:
        if self.req.kind == "chat":
            return chat_chunk(
                self.id, self.created, self.model, delta, logprobs, finish, usage_field
            )
        body = self._base("text_completion")
        body["choices"] = [
            {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}
        ]
        if usage_field:
            body["usage"] = None
        return body

    def first_chunk(self, usage_field: bool) -> dict[str, Any] | None:
        if self.req.kind != "chat":
            return None
        delta = {"role": "assistant", "content": "", "refusal": None}
        return self._noted(self._chunk(delta, "", None, None, usage_field))

    def delta_chunk(self, d: Delta, usage_field: bool) -> dict[str, Any]:
        logprobs = None
        if self.want_logprobs:
            if self.req.kind == "chat":
                logprobs = chat_logprobs(d.tokens, self.k)
            else:
                logprobs = completion_logprobs(list(d.tokens), self.k, self.text_offset)
        self.text_offset += len(d.text)
        return self._chunk({"content": d.text}, d.text, logprobs, None, usage_field)

    def final_chunks(self, usage_field: bool) -> list[dict[str, Any]]:
        """The chunk with the finish reason; a buffered answer's delta before it."""
        if self.buffered:
            chunks = reply_chunks(self.id, self.created, self.model, self.reply(), usage_field)
            return chunks[1:]  # first_chunk said the role
        return [self._chunk({}, "", None, self.req.finish_reason, usage_field)]

    def usage_chunk(self) -> dict[str, Any]:
        body = self._base("chat.completion.chunk" if self.req.kind == "chat" else "text_completion")
        if self.req.kind == "chat":
            body["service_tier"] = "default"
        body["choices"] = []
        body["usage"] = usage(self.req)
        return body
