"""The OpenAPI schema says what the API really answers, so clients and fuzzers can
trust it: every /v1 operation declares the error statuses an `LlmosError` can carry
(with the OpenAI-style error body) and 400 instead of FastAPI's 422, which this
app never sends (validation errors are 400s naming the field, see errors.py)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from llmos.errors import LlmosError

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_REF = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {
    "description": "whole seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
# Not raised as LlmosError but sent by the app all the same.
_EDGE = {400: "validation", 404: "unknown route", 405: "method not allowed"}


def error_statuses() -> list[int]:
    """Every status an LlmosError subclass carries, plus the edge's own."""
    seen: set[int] = set(_EDGE)
    todo: list[type[LlmosError]] = [LlmosError]
    while todo:
        cls = todo.pop()
        seen.add(cls.status)
        todo.extend(cls.__subclasses__())
    return sorted(s for s in seen if s != 405)


def _declare_errors(op: dict[str, Any], statuses: list[int]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    for status in statuses:
        declared: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": _REF}},
        }
        if status == 429:
            declared["headers"] = {"Retry-After": _RETRY_AFTER}
        responses.setdefault(str(status), declared)


def install(app: FastAPI) -> None:
    """Wrap `app.openapi` so the schema it builds (once) declares the real errors."""
    build = app.openapi

    def schema() -> dict[str, Any]:
        spec = app.openapi_schema
        if spec is None:
            spec = build()  # FastAPI's own; it caches it on the app, we amend it in place
            spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
            statuses = error_statuses()
            for path, ops in spec.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for op in ops.values():
                        _declare_errors(op, statuses)
        return spec

    app.openapi = schema  # type: ignore[method-assign]
