"""Batch jobs from the SDK: mixins for `Client` and `AsyncClient`.

A job is one chat or text completion the kernel runs in the background and keeps in
its crash-safe journal; `submit_job` returns once the job is on the kernel's disk,
`wait_job` polls until it is completed, failed or cancelled. A completed job's
`result` is the chat.completion / text_completion object (`result_of_job` makes a
ChatResult of it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from llmos.sdk._errors import ApiError
from llmos.sdk._wire import ChatResult, Messages, body_of, data_of, messages_of, result_of

JOBS_PATH: Final = "/v1/jobs"
TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
POLL_FIRST_S: Final = 0.05  # wait_job polls at this interval, doubling up to POLL_MAX_S
POLL_MAX_S: Final = 1.0


def job_url(job_id: str) -> str:
    return f"{JOBS_PATH}/{quote(str(job_id), safe='')}"


def job_request(
    messages_or_text: Messages | None, prompt: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    """POST /v1/jobs: a chat job (messages) or a completion job (prompt); `body`
    holds the model and sampling fields."""
    if prompt is not None:
        body["prompt"] = prompt
        return {"endpoint": "/v1/completions", "body": body}
    assert messages_or_text is not None
    body["messages"] = messages_of(messages_or_text)
    return {"endpoint": "/v1/chat/completions", "body": body}


def _one_of(messages_or_text: Messages | None, prompt: str | None) -> None:
    if (messages_or_text is None) == (prompt is None):
        raise ApiError(
            400, "give either messages (a chat job) or prompt (a completion job)", param="prompt"
        )


def list_params(status: str | None, limit: int, before: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if before is not None:
        params["before"] = before
    return params


def key_headers(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}


def result_of_job(job: Mapping[str, Any]) -> ChatResult:
    """The answer of a completed job; ApiError naming the reason otherwise."""
    if job.get("status") != "completed":
        error = job.get("error") or {}
        reason = error.get("message") or f"the job is {job.get('status')}"
        raise ApiError(409, f"job {job.get('id')} has no result: {reason}", code=error.get("code"))
    return result_of(job.get("result"))


def _timed_out(job: Mapping[str, Any], timeout: float) -> ApiError:
    return ApiError(
        408,
        f"job {job.get('id')} is still {job.get('status')} after {timeout:g}s",
        param="timeout",
        code="timeout",
    )


class JobsMixin:
    """Client's job methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        def _default_model(self) -> str: ...

    def submit_job(
        self,
        messages_or_text: Messages | None = None,
        *,
        prompt: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Journal a chat job (messages) or a completion job (prompt=...); returns the
        job (status `queued`) once it is on the kernel's disk. Retrying with the same
        `idempotency_key` returns the same job, never a second one."""
        _one_of(messages_or_text, prompt)
        body = body_of(
            model or self._default_model(),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            extra=extra,
        )
        request = job_request(messages_or_text, prompt, body)
        headers = key_headers(idempotency_key)
        job: dict[str, Any] = self._request("POST", JOBS_PATH, request, headers=headers)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", job_url(job_id))
        return job

    def jobs(
        self, status: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Your jobs, newest first (without request and result: see `job`)."""
        params = list_params(status, limit, before)
        return data_of(self._request("GET", JOBS_PATH, params=params))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("DELETE", job_url(job_id))
        return job

    def wait_job(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job is completed, failed or cancelled; the job then.
        ApiError (code `timeout`) if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_FIRST_S
        while True:
            job = self.job(job_id)
            if job.get("status") in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise _timed_out(job, timeout or 0.0)
            left = pause if deadline is None else min(pause, deadline - time.monotonic())
            time.sleep(max(0.0, left))
            pause = min(pause * 2, POLL_MAX_S)


class AsyncJobsMixin:
    """AsyncClient's job methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        async def _default_model(self) -> str: ...

    async def submit_job(
        self,
        messages_or_text: Messages | None = None,
        *,
        prompt: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """As `Client.submit_job`."""
        _one_of(messages_or_text, prompt)
        body = body_of(
            model or await self._default_model(),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            extra=extra,
        )
        request = job_request(messages_or_text, prompt, body)
        headers = key_headers(idempotency_key)
        job: dict[str, Any] = await self._request("POST", JOBS_PATH, request, headers=headers)
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._request("GET", job_url(job_id))
        return job

    async def jobs(
        self, status: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[dict[str, Any]]:
        params = list_params(status, limit, before)
        return data_of(await self._request("GET", JOBS_PATH, params=params))

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._request("DELETE", job_url(job_id))
        return job

    async def wait_job(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """As `Client.wait_job`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_FIRST_S
        while True:
            job = await self.job(job_id)
            if job.get("status") in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise _timed_out(job, timeout or 0.0)
            left = pause if deadline is None else min(pause, deadline - time.monotonic())
            await asyncio.sleep(max(0.0, left))
            pause = min(pause * 2, POLL_MAX_S)
