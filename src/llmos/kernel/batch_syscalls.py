"""The `file.*` (OpenAI file objects) and `batch.*` syscalls: thin handlers that
check argument types and call the batch runner (batches.py).

`batch.create` takes the input file's lines already parsed by the front end
(each: custom_id, kind, request — the kernel's llm.chat / llm.complete
arguments — and max_tokens, or an `error` {code, message} when the line is
unusable); the runner journals them all before it returns.

syscalls.py gathers BATCH_SYSCALLS into the syscall table."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest
from llmos.kernel.batches import WINDOW_S
from llmos.kernel.sysdefs import ALL, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import DEFAULT_PRIORITY, MAX_BATCH_LINES, MAX_JOB_LIST

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
RESOURCES = {  # metadata key -> (argument, type, lowest, highest)
    "llmos_max_concurrent": ("max_concurrent", int, 1, 1 << 20),
    "llmos_token_budget": ("token_budget", int, 1, 1 << 62),
    "llmos_deadline_s": ("deadline_s", float, 1.0, 86_400.0),
    "llmos_priority": ("priority", int, 0, DEFAULT_PRIORITY - 1),  # below interactive work
}


def _str(a: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = a.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key} must be a non-empty string", param=key)
    return value


def _limit(a: dict[str, Any]) -> int:
    limit = a.get("limit", 20)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_JOB_LIST:
        raise InvalidRequest(f"limit must be an integer 1..{MAX_JOB_LIST}", param="limit")
    return limit


def resources(metadata: dict[str, str] | None) -> dict[str, Any]:
    """llmos's resource requests, from the batch's metadata (OpenAI keeps metadata
    values strings): errors name `metadata.<key>`."""
    out: dict[str, Any] = {}
    for key, (arg, kind, low, high) in RESOURCES.items():
        raw = (metadata or {}).get(key)
        if raw is None:
            continue
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            value = None
        if value is None or not low <= value <= high:
            raise InvalidRequest(f"{key} must be a number {low}..{high}", param=f"metadata.{key}")
        out[arg] = value
    return out


async def _file_create(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    raw = a.get("content_b64")
    if not isinstance(raw, str):
        raise InvalidRequest("content_b64 must be a string", param="content_b64")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("content_b64 must be base64", param="content_b64") from None
    purpose, filename = _str(a, "purpose"), _str(a, "filename")
    assert purpose is not None and filename is not None
    return k.batches.files.create(c.owner, purpose, filename, data).to_dict()


async def _file_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.batches.files.visible_to(c, _str(a, "file_id") or "").to_dict()


async def _file_content(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    """An uploaded file's bytes (base64); a generated one's records, to render."""
    f = k.batches.files.visible_to(c, _str(a, "file_id") or "")
    if f.batch_id is None or f.part is None:
        data = k.batches.files.data(f.id) or b""
        return {"file": f.to_dict(), "content_b64": base64.b64encode(data).decode("ascii")}
    batch = k.batches.visible(c, f.batch_id)
    records = k.batches.records(batch, f.part)
    return {"file": f.to_dict(), "batch": batch.to_dict(), "records": records}


async def _file_delete(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    file_id = _str(a, "file_id") or ""
    k.batches.files.delete(c, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


async def _file_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    files = k.batches.files.page(c, _str(a, "purpose", False), _limit(a), _str(a, "after", False))
    return [f.to_dict() for f in files]


async def _batch_create(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    endpoint = _str(a, "endpoint") or ""
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"endpoint must be one of {', '.join(ENDPOINTS)} (this kernel serves no embeddings)",
            param="endpoint",
        )
    window = _str(a, "completion_window") or ""
    if window not in WINDOW_S:
        raise InvalidRequest('completion_window must be "24h"', param="completion_window")
    metadata = a.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(isinstance(v, str) and isinstance(key, str) for key, v in metadata.items())
    ):
        raise InvalidRequest("metadata: at most 16 string keys and values", param="metadata")
    lines = a.get("lines")
    if not isinstance(lines, list) or not all(isinstance(ln, dict) for ln in lines):
        raise InvalidRequest("lines must be a list of objects", param="lines")
    if not 1 <= len(lines) <= MAX_BATCH_LINES:
        raise InvalidRequest(
            f"the input file must hold 1..{MAX_BATCH_LINES} requests", param="input_file_id"
        )
    batch = k.batches.create(
        c,
        endpoint,
        _str(a, "input_file_id") or "",
        window,
        metadata,
        lines,
        resources(metadata),
    )
    return batch.to_dict()


async def _batch_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.batches.visible(c, _str(a, "batch_id") or "").to_dict()


async def _batch_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return [b.to_dict() for b in k.batches.page(c, _limit(a), _str(a, "after", False))]


async def _batch_cancel(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.batches.cancel(c, _str(a, "batch_id") or "").to_dict()


BATCH_SYSCALLS = (
    Syscall("file.create", _file_create, ALL, "store an OpenAI file object (purpose, bytes)"),
    Syscall("file.get", _file_get, READERS, "one OpenAI file object"),
    Syscall("file.content", _file_content, READERS, "a file's bytes, or a batch result's records"),
    Syscall("file.delete", _file_delete, ALL, "delete an OpenAI file object"),
    Syscall("file.list", _file_list, READERS, "the caller's OpenAI file objects, newest first"),
    Syscall(
        "batch.create", _batch_create, ALL, "journal a batch of parsed lines; admitted by slots"
    ),
    Syscall("batch.get", _batch_get, READERS, "one batch: status, request counts, result files"),
    Syscall(
        "batch.list", _batch_list, READERS, "the caller's batches, newest first (after, limit)"
    ),
    Syscall(
        "batch.cancel", _batch_cancel, ALL, "cancel a batch; finished lines stay in its output"
    ),
)
