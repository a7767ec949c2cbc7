"""One exception hierarchy. Every error a user can cause is an `LlmosError` that
carries its HTTP status, an OpenAI-style type, the offending field and a message.
Anything else escaping the kernel is a bug, logged with a trace id."""

from __future__ import annotations


class LlmosError(Exception):
    """A user-facing error: HTTP status, OpenAI error type, field (`param`), code."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(LlmosError):
    status = 400
    code = "invalid_value"


class ContextOverflow(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(LlmosError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(LlmosError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(LlmosError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Hidden(NotFound):
    """Access control hides that the thing exists: the caller sees a plain 404,
    the audit log records a denial."""


class PayloadTooLarge(LlmosError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(LlmosError):
    """An upload (audio, image) of a type llmos does not take."""

    status = 415
    code = "unsupported_media_type"


class Overloaded(LlmosError):
    """A bounded queue is full, or a process is at its concurrency quota: retry later."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int = 1,
    ):
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after


class QuotaExceeded(LlmosError):
    """A process used up a quota that waiting will not give back (its token budget)."""

    status = 403
    type = "quota_error"
    code = "quota_exceeded"


class Killed(LlmosError):
    """The request's process was killed; queued and running work fails with this."""

    status = 409
    type = "process_killed"
    code = "process_killed"


class DeviceError(LlmosError):
    """An engine failed. Translated at the device boundary from foreign errors."""

    status = 502
    type = "device_error"
    code = "device_error"


class ToolError(LlmosError):
    """A tool outside the kernel (an MCP server's) failed or answered badly."""

    status = 502
    type = "tool_error"
    code = "tool_error"


class Unavailable(LlmosError):
    status = 503
    type = "unavailable"
    code = "unavailable"


class NotEnoughData(Unavailable):
    """Asked for what needs more history than the kernel has yet (e.g. training
    the predictor before enough requests finished): retry once there is more."""

    status = 409
    type = "invalid_request_error"
    code = "not_enough_data"


class Timeout(LlmosError):
    """A request passed its deadline (queued plus running); it was stopped there."""

    status = 504
    type = "timeout_error"
    code = "request_timeout"


class StillRunning(LlmosError):
    """A bounded wait for a process (proc.wait) ended before the process did: ask again."""

    status = 408
    type = "timeout_error"
    code = "still_running"


class HeadersTooLarge(LlmosError):
    status = 431
    code = "headers_too_large"
