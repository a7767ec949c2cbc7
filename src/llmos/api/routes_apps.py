"""Apps over HTTP: `GET /serving/apps` lists them with their input schemas,
`POST /serving/process {"name", "input"?}` runs one call as a process.

Answers are `{"status": "success", "result": …}`; every failure, the token's
included, is `{"status": "error", "error": {message, type, param, code}}` with its
4xx (an unknown app's 404 also lists the apps). So these routes authenticate and
read their body themselves rather than through FastAPI's dependencies; only what
the HTTP edge refuses before routing (errors.BodyGuard's 413 on a Content-Length
over the limit, limits.py's 431) has the plain error body."""

from __future__ import annotations

import json
import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from llmos.api.apphost import AppHost, UnknownApp
from llmos.api.auth import caller, kernel_of
from llmos.api.openapi import ERROR_SCHEMA, error_statuses
from llmos.errors import InvalidRequest, LlmosError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/serving", tags=["apps"])

FIELDS = ("name", "input")
# `status` is in every error these routes answer; not in the few the HTTP edge
# answers before routing (a Content-Length over the body limit: 413; headers: 431).
ERROR: dict[str, Any] = {
    "title": "ServingError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "status": {"const": "error"},
        "error": ERROR_SCHEMA["properties"]["error"],
        "apps": {"type": "array", "items": {"type": "string"}},
    },
}
SUCCESS: dict[str, Any] = {
    "type": "object",
    "required": ["status", "app", "pid", "result", "usage"],
    "properties": {
        "status": {"const": "success"},
        "app": {"type": "string"},
        "pid": {"type": "integer"},
        "result": {},
        "usage": {"type": "object"},
    },
}
LISTING: dict[str, Any] = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array"}},
}
BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "an app's name or alias"},
        "input": {"description": "the app's input, as its input_schema says; optional"},
    },
}


def _responses(success: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {
        200: {"description": "OK", "content": {"application/json": {"schema": success}}}
    }
    for status in error_statuses():
        declared: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": ERROR}},
        }
        if status == 429:
            declared["headers"] = {
                "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}
            }
        out[status] = declared
    return out


def host_of(request: Request) -> AppHost:
    """The app's one host, made on first use (the app factory knows no apps)."""
    state = request.app.state
    host: AppHost | None = getattr(state, "apphost", None)
    if host is None:
        host = state.apphost = AppHost(kernel_of(request))
    return host


def _error(exc: LlmosError) -> JSONResponse:
    body: dict[str, Any] = {"status": "error", **exc.to_dict()}
    if isinstance(exc, UnknownApp):
        body["apps"] = exc.apps
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _bug(exc: Exception) -> JSONResponse:
    trace = uuid.uuid4().hex[:12]
    log.error("internal error in an app call, trace id %s", trace, exc_info=exc)
    error = {"message": f"internal error (trace id {trace})", "type": "server_error"}
    return JSONResponse(
        {"status": "error", "error": {**error, "param": None, "code": "internal"}},
        status_code=500,
    )


async def _body(request: Request) -> tuple[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}", param="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            'the body must be a JSON object: {"name": <app>, "input": <optional>}', param="body"
        )
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown field {unknown[0]!r}: the body has only name and input", param=unknown[0]
        )
    name = body.get("name")
    if name is None:
        raise InvalidRequest("missing required field 'name'", param="name")
    if not isinstance(name, str):
        raise InvalidRequest("name must be a string: an app's name", param="name")
    return name, body.get("input")


@router.get("/apps", responses=_responses(LISTING))
async def list_apps(request: Request) -> JSONResponse:
    """The apps, with their aliases, descriptions and input schemas."""
    try:
        caller(request)
        host = host_of(request)
        await host.ensure_seeded()
        return JSONResponse({"object": "list", "data": host.listing()})
    except LlmosError as exc:
        return _error(exc)


@router.post(
    "/process",
    responses=_responses(SUCCESS),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BODY}}}
    },
)
async def process(request: Request) -> JSONResponse:
    """Run an app: `{"name": "customer_service", "input": "How do I return an item?"}`.
    Without `input`, an app answers its default (a greeting, popular items, …)."""
    try:
        who = caller(request)
        name, value = await _body(request)
        answer = await host_of(request).run(who, name, value)
        return JSONResponse(answer)
    except LlmosError as exc:
        return _error(exc)
    except Exception as exc:  # a bug (an app's too): logged with a trace id
        return _bug(exc)
