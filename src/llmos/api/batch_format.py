"""OpenAI's batch file formats: parsing an input file into the kernel's lines, and
rendering a batch's result records as output / error file lines.

Input: one JSON object a line, `{"custom_id", "method": "POST", "url", "body"}`;
`url` must be the batch's endpoint and `body` a valid request for it (checked by
the same schema as the endpoint itself). A line that is not usable becomes a
record with `error` {code, message, line}; the file as a whole is refused (400
naming `input_file_id`) when it is not UTF-8, holds no request, too many, or no
line of it is JSON at all.

Output / error lines: `{"id", "custom_id", "response": {"status_code",
"request_id", "body"} | null, "error": {"code", "message"} | null}`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmos.api.routes_jobs import JobCreate, _kernel_args, render
from llmos.errors import InvalidRequest, LlmosError
from llmos.params import BATCH_DEFAULT_MAX_TOKENS, MAX_BATCH_LINES


def _bad(code: str, message: str, line: int) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "line": line}}


def parse_line(text: str, number: int, endpoint: str, seen: set[str]) -> dict[str, Any]:
    """One input line (1-based `number`) as the kernel's line record."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return _bad("invalid_json", f"line {number} is not JSON: {exc}", number)
    if not isinstance(obj, dict):
        return _bad("invalid_json", f"line {number} is not a JSON object", number)
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _bad("missing_custom_id", f"line {number} has no custom_id string", number)
    if custom_id in seen:
        out = _bad("duplicate_custom_id", f"custom_id {custom_id!r} was used before", number)
        return {**out, "custom_id": custom_id}
    seen.add(custom_id)
    rec: dict[str, Any] = {"custom_id": custom_id}
    if obj.get("method") != "POST":
        return {**rec, **_bad("invalid_method", 'method must be "POST"', number)}
    if obj.get("url") != endpoint:
        return {**rec, **_bad("invalid_url", f"url must be the batch's {endpoint}", number)}
    body = obj.get("body")
    if not isinstance(body, dict):
        return {**rec, **_bad("invalid_body", "body must be a JSON object", number)}
    try:
        kind, args = _kernel_args(JobCreate(endpoint=endpoint, body=body))  # type: ignore[arg-type]
    except LlmosError as exc:
        return {**rec, **_bad("invalid_request", exc.message, number)}
    max_tokens = args.get("max_tokens") or BATCH_DEFAULT_MAX_TOKENS
    return {**rec, "kind": kind, "request": args, "max_tokens": max_tokens}


def parse_file(data: bytes, endpoint: str) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the input file is not UTF-8 text", param="input_file_id") from None
    numbered = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not numbered:
        raise InvalidRequest("the input file holds no request", param="input_file_id")
    if len(numbered) > MAX_BATCH_LINES:
        raise InvalidRequest(
            f"the input file holds {len(numbered)} requests; at most {MAX_BATCH_LINES}",
            param="input_file_id",
        )
    seen: set[str] = set()
    lines = [parse_line(ln, n, endpoint, seen) for n, ln in numbered]
    if all(ln.get("error", {}).get("code") == "invalid_json" for ln in lines):
        raise InvalidRequest("the input file is not JSONL: no line is JSON", param="input_file_id")
    return lines


def _request_id(batch_id: str, idx: int) -> str:
    return "batch_req_" + hashlib.sha256(f"{batch_id}/{idx}".encode()).hexdigest()[:24]


def render_record(batch_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": _request_id(batch_id, rec["idx"]), "custom_id": rec["custom_id"]}
    job = rec.get("job")
    error = rec.get("error")
    if error is None and job is not None:
        body = render(job)["result"]
        out["response"] = {"status_code": 200, "request_id": job["id"], "body": body}
        out["error"] = None
        return out
    out["response"] = None
    out["error"] = {"code": error.get("code"), "message": error.get("message")} if error else None
    return out


def render_file(batch_id: str, records: list[dict[str, Any]]) -> bytes:
    lines = (json.dumps(render_record(batch_id, r), separators=(",", ":")) for r in records)
    return "".join(line + "\n" for line in lines).encode("utf-8")
