"""The SDK's errors. Every failure a caller can see is an `ApiError`; errors from
httpx underneath are translated at the boundary (`_transport_error`), so callers
catch ours. `ApiError` is an `LlmosError`, so `except llmos.LlmosError` catches
errors from the kernel in-process and over HTTP alike."""

from __future__ import annotations

import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

from llmos.errors import LlmosError


class ApiError(LlmosError):
    """The kernel answered with an error (or a stream ended with an error event).
    `retry_after` is the seconds the kernel asked us to wait (its Retry-After header,
    sent with 429s: a full queue or a process at its concurrency quota), else None."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        *,
        error_type: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        if error_type is not None:
            self.type = error_type

    def __repr__(self) -> str:
        retry = f", retry_after={self.retry_after}" if self.retry_after is not None else ""
        return (
            f"{type(self).__name__}(status={self.status}, message={self.message!r}, "
            f"param={self.param!r}, code={self.code!r}{retry})"
        )


class KernelUnreachable(ApiError):
    """No kernel answered at `url` (refused, DNS, connect timeout, connection lost)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            503,
            f"cannot reach the llmos kernel at {url}: {reason}",
            code="kernel_unreachable",
            error_type="unavailable",
        )
        self.url = url
        self.reason = reason


def _status_by_code() -> dict[str, int]:
    """Error code -> HTTP status, from the server's own hierarchy (llmos.errors), so a
    stream's error event (which has no status line) maps like a plain 4xx would."""
    out: dict[str, int] = {}
    todo: list[type[LlmosError]] = [LlmosError]
    while todo:
        cls = todo.pop()
        if cls.code is not None:
            out.setdefault(cls.code, cls.status)
        todo.extend(cls.__subclasses__())
    return out


def error_from_body(
    status: int, body: object, fallback: str, *, retry_after: int | None = None
) -> ApiError:
    """An ApiError from an OpenAI-style {"error": {...}} body, or from `fallback`."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, str):
        return ApiError(status, err, retry_after=retry_after)
    if not isinstance(err, dict):
        return ApiError(status, fallback, retry_after=retry_after)
    code = err.get("code")
    code = str(code) if code is not None else None
    if not status:
        status = int(err.get("status") or _status_by_code().get(code or "", 500))
    param = err.get("param")
    return ApiError(
        status,
        str(err.get("message") or fallback),
        str(param) if param is not None else None,
        code,
        error_type=str(err["type"]) if err.get("type") else None,
        retry_after=retry_after,
    )


def error_from_response(response: httpx.Response) -> ApiError:
    """Translate a 4xx/5xx response (already read) into an ApiError."""
    try:
        body: object = response.json()
    except ValueError:
        body = None
    text = response.text.strip() if body is None else ""
    fallback = text[:500] or f"HTTP {response.status_code} {response.reason_phrase}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_from_body(response.status_code, body, fallback, retry_after=retry_after)


def parse_retry_after(value: str | None) -> int | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date
    (RFC 9110 10.2.3). None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=UTC)
    return max(0, math.ceil(when.timestamp() - time.time()))


def transport_error(url: str, exc: httpx.TransportError) -> ApiError:
    """Translate an httpx transport failure. A connection that never came up, or
    dropped, means the kernel is unreachable; a read timeout means it is slow."""
    if isinstance(exc, httpx.ConnectTimeout):
        return KernelUnreachable(url, "connection timed out")
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(504, f"timed out waiting for the llmos kernel at {url}", code="timeout")
    if isinstance(exc, httpx.ConnectError):
        return KernelUnreachable(url, _reason(exc, "connection refused"))
    return KernelUnreachable(url, _reason(exc, "connection lost"))


def _reason(exc: Exception, default: str) -> str:
    text = str(exc).strip()
    if "refused" in text.lower():
        return "connection refused"
    return text or default
