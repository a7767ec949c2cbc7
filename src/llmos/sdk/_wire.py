"""What goes over the wire, shared by `Client` and `AsyncClient`: request bodies,
results, and the server-sent-events decoding. No I/O here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict
from urllib.parse import quote

import httpx

from llmos.sdk._errors import ApiError, error_from_body, error_from_response

Messages = str | Sequence[Mapping[str, Any]]

CHAT_PATH: Final = "/v1/chat/completions"
COMPLETIONS_PATH: Final = "/v1/completions"
PROCESSES_PATH: Final = "/v1/processes"
SCHEDULER_PATH: Final = "/v1/sys/scheduler"
FILES_PATH: Final = "/v1/files"
FILES_META_PATH: Final = "/v1/files-meta"
FILES_VERSIONS_PATH: Final = "/v1/files-versions"
FILES_ROLLBACK_PATH: Final = "/v1/files-rollback"
FILES_SEARCH_PATH: Final = "/v1/files-search"
MEMORIES_PATH: Final = "/v1/memories"
MEMORIES_SEARCH_PATH: Final = "/v1/memories/search"
OCTET_STREAM: Final = {"Content-Type": "application/octet-stream"}
DONE: Final = object()  # `data: [DONE]`: the stream ended normally


class SchedulerKnobs(TypedDict, total=False):
    """What `set_scheduler` may change besides the policy (None = leave as is)."""

    quantum: int | None  # rr's quantum, mlfq's base quantum, in generated tokens
    aging_s: float | None
    mlfq_levels: int | None
    mlfq_boost_s: float | None
    preempt_margin: int | None
    sjf_aging_tokens_per_s: float | None
    weights: Mapping[str, float] | None  # fair's share per owner


class MessageParams(TypedDict, total=False):
    """What `send` / `send_stream` may set for one turn (unset = the kernel's default;
    max_tokens defaults to 256 there)."""

    model: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: str | Sequence[str]


@dataclass(frozen=True)
class ChatResult:
    """One finished (non-streamed) chat or text completion."""

    text: str
    finish_reason: str | None
    usage: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def messages_of(messages_or_text: Messages) -> list[dict[str, Any]]:
    """A bare string is one user message."""
    if isinstance(messages_or_text, str):
        return [{"role": "user", "content": messages_or_text}]
    return [dict(m) for m in messages_or_text]


def body_of(
    model: str,
    *,
    max_tokens: int | None,
    temperature: float | None,
    stop: str | Sequence[str] | None,
    seed: int | None,
    extra: Mapping[str, Any],
    stream: bool = False,
) -> dict[str, Any]:
    """The shared part of a completion request; unset sampling fields are left out
    so the kernel's defaults apply."""
    body: dict[str, Any] = {"model": model}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    if stop is not None:
        body["stop"] = stop if isinstance(stop, str) else list(stop)
    if seed is not None:
        body["seed"] = seed
    body.update(extra)
    if stream:
        body["stream"] = True
    return body


def spawn_body(
    name: str,
    priority: int,
    *,
    max_concurrent: int | None,
    token_budget: int | None,
    memory_shared: bool = False,
) -> dict[str, Any]:
    """POST /v1/processes; quotas left unset are unlimited."""
    body: dict[str, Any] = {"name": name, "priority": priority}
    if max_concurrent is not None:
        body["max_concurrent"] = max_concurrent
    if token_budget is not None:
        body["token_budget"] = token_budget
    if memory_shared:
        body["memory_shared"] = True
    return body


def process_url(pid: int, part: str = "") -> str:
    """`/v1/processes/{pid}`, or one of its sub-resources (`messages`, `context`...)."""
    url = f"{PROCESSES_PATH}/{int(pid)}"
    return f"{url}/{part}" if part else url


def message_body(content: str, params: MessageParams, *, stream: bool = False) -> dict[str, Any]:
    """POST /v1/processes/{pid}/messages: only the new turn; the kernel keeps the rest."""
    body: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        body["stop"] = list(stop)
    body["content"] = content
    if stream:
        body["stream"] = True
    return body


def core_body(system: str | None, pinned: Sequence[str] | None) -> dict[str, Any]:
    """PUT /v1/processes/{pid}/core: only what is being changed."""
    body: dict[str, Any] = {}
    if system is not None:
        body["system"] = system
    if pinned is not None:
        body["pinned"] = list(pinned)
    return body


def memory_url(mid: int) -> str:
    return f"{MEMORIES_PATH}/{int(mid)}"


def memory_body(
    text: str | None,
    *,
    tags: Sequence[str] | None,
    meta: Mapping[str, Any] | None,
    shared: bool = False,
    pid: int | None = None,
) -> dict[str, Any]:
    """POST /v1/memories and PATCH /v1/memories/{id}: fields left unset are not sent
    (on PATCH: left as they are)."""
    body: dict[str, Any] = {}
    if text is not None:
        body["text"] = text
    if tags is not None:
        body["tags"] = list(tags)
    if meta is not None:
        body["meta"] = dict(meta)
    if shared:
        body["shared"] = True
    if pid is not None:
        body["pid"] = int(pid)
    return body


def memory_search_body(query: str, k: int, tag: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "k": k}
    if tag is not None:
        body["tag"] = tag
    return body


def memory_list_params(tag: str | None, limit: int, offset: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if tag is not None:
        params["tag"] = tag
    return params


def scheduler_body(policy: str | None, knobs: SchedulerKnobs) -> dict[str, Any]:
    """PUT /v1/sys/scheduler: only what is being changed; the kernel keeps the rest."""
    body: dict[str, Any] = {k: v for k, v in knobs.items() if v is not None}
    if policy is not None:
        body["policy"] = policy
    if "weights" in body:
        body["weights"] = dict(body["weights"])
    return body


def file_url(route: str, path: str) -> str:
    """`route/path`, the path percent-encoded part by part. `.` and `..` parts are
    encoded too, so no HTTP client resolves them away: the kernel judges the path
    exactly as given."""
    try:
        parts = [quote(part, safe="") for part in path.split("/")]
    except UnicodeEncodeError:
        raise ApiError(400, "path must be valid Unicode text", "path", "invalid_value") from None
    return route + "/" + "/".join(p.replace(".", "%2E") if p in (".", "..") else p for p in parts)


def file_bytes(data: bytes | str) -> bytes:
    """A file's content: text is stored as UTF-8."""
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def version_params(version: int | None) -> dict[str, int]:
    return {} if version is None else {"version": int(version)}


def content_of(response: httpx.Response) -> bytes:
    """The body of a successful raw (non-JSON) response, or the ApiError sent."""
    if response.is_error:
        raise error_from_response(response)
    return response.content


def json_of(response: httpx.Response, url: str) -> Any:
    """The JSON of a successful response, or the ApiError the kernel sent."""
    if response.is_error:
        raise error_from_response(response)
    try:
        return response.json()
    except ValueError:
        raise ApiError(
            502,
            f"{url} answered {response.request.url.path} with something other than JSON; "
            "is it an llmos kernel?",
            code="bad_response",
        ) from None


def data_of(body: Any) -> list[dict[str, Any]]:
    """The `data` of an OpenAI-style {"object": "list", "data": [...]}."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ApiError(502, "the kernel answered with no `data` list", code="bad_response")
    return data


def first_model(models: list[dict[str, Any]]) -> str:
    for m in models:
        if m.get("id"):
            return str(m["id"])
    raise ApiError(404, "the kernel serves no models", param="model", code="model_not_found")


def result_of(body: Any) -> ChatResult:
    """A ChatResult from a chat (`message.content`) or completion (`text`) response."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices:
        raise ApiError(502, "the kernel answered with no choices", code="bad_response")
    choice = choices[0]
    if "message" in choice:
        text = (choice.get("message") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    return ChatResult(
        text=text,
        finish_reason=choice.get("finish_reason"),
        usage=dict(body.get("usage") or {}),
        id=str(body.get("id") or ""),
        raw=body,
    )


def sse_event(line: str) -> str | object | None:
    """Decode one SSE line: the text delta it carries, DONE, or None for lines that
    carry nothing (blank, comments, other fields). An error event raises ApiError."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return DONE
    try:
        event = json.loads(payload)
    except ValueError:
        raise ApiError(
            502, "the kernel sent a malformed stream event", code="bad_response"
        ) from None
    if not isinstance(event, dict):
        return None
    if "error" in event:
        raise error_from_body(0, event, "the stream failed")
    choices = event.get("choices") or []
    if not choices:
        return None  # e.g. a final usage-only chunk
    choice = choices[0]
    delta = choice.get("delta")
    text = (delta or {}).get("content") if delta is not None else choice.get("text")
    return text or None


def truncated_stream() -> ApiError:
    return ApiError(502, "the kernel's stream ended before [DONE]", code="incomplete_stream")
