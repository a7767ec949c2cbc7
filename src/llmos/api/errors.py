"""Errors at the HTTP edge: every failure is OpenAI-style JSON naming the field.
LlmosError -> its status; validation -> 400; unknown routes -> 404; a bug -> 500
with a trace id in the log, never a stack trace in the response."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmos.errors import LlmosError, PayloadTooLarge

log = logging.getLogger(__name__)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "any"})


def _is_field(part: Any) -> bool:
    """Drop pydantic's location tags that are not field names (union members)."""
    if isinstance(part, int):
        return True
    text = str(part)
    return text not in _TYPE_TAGS and "[" not in text


def _param(loc: tuple[Any, ...]) -> str | None:
    if loc and loc[0] in ("body", "path", "query"):  # where the value came from
        loc = loc[1:]  # (only the first part: a field may be called `path` or `query`)
    parts = [str(p) for p in loc if _is_field(p)]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {"msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    param: str | None
    param = _param(loc)
    if first.get("type") == "json_invalid":
        message, param = f"malformed JSON body: {(first.get('ctx') or {}).get('error', '')}", "body"
    elif param is None:
        message, param = f"the body must be a JSON object: {first.get('msg')}", "body"
    elif first.get("type") == "missing":
        message = f"missing required field '{param}'"
    else:
        message = f"{param}: {first.get('msg')}"
    return JSONResponse(
        error_body(message, "invalid_request_error", param, "invalid_value"), status_code=400
    )


def error_response(exc: LlmosError) -> JSONResponse:
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(LlmosError)
    async def _llmos(_: Request, exc: LlmosError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = error_body(str(exc.detail), "invalid_request_error", None, code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        trace = uuid.uuid4().hex[:12]
        log.error("internal error, trace id %s", trace, exc_info=exc)
        body = error_body(f"internal error (trace id {trace})", "server_error", None, "internal")
        return JSONResponse(body, status_code=500)


class BodyGuard:
    """Refuse request bodies over `limit` bytes with 413, by header or by count; and
    read bodies as JSON whatever their content type says (`curl -d` sends form
    encoding; OpenAI-compatible servers take JSON anyway)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind not in (b"application/json", b"multipart/form-data"):  # uploads stay parts
            headers[b"content-type"] = b"application/json"
            scope = {**scope, "headers": list(headers.items())}
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(f"request body exceeds {self.limit} bytes", param="body")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, send: Send) -> None:
        err = PayloadTooLarge(f"request body exceeds {self.limit} bytes", param="body")
        response = JSONResponse(err.to_dict(), status_code=err.status)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})
