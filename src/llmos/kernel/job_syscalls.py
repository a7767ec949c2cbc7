"""The `job.*` syscalls: thin handlers that check argument types and call the job
runner (jobs.py), which keeps jobs in the journal (journal.py).

A job's `body` holds the arguments `llm.chat` / `llm.complete` take; a completed
job's `result` is the raw outcome (text, finish_reason, token counts, model,
created), which front ends render (the HTTP API as OpenAI's response object).

syscalls.py gathers JOB_SYSCALLS into the syscall table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, Killed
from llmos.kernel.journal import KINDS, JobStatus
from llmos.kernel.sysdefs import ALL, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import MAX_IDEMPOTENCY_KEY, MAX_JOB_LIST

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


def _alive(k: Kernel, c: Caller) -> None:
    """A process token acts for its owner while its process lives."""
    if c.pid is not None:
        proc = k.procs.find(c.pid)
        if proc is None or not proc.state.alive:
            raise Killed(f"process {c.pid} has ended", param="pid")


def _opt_str(a: dict[str, Any], key: str) -> str | None:
    value = a.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string", param=key)
    return value


def _str(a: dict[str, Any], key: str) -> str:
    value = _opt_str(a, key)
    if not value:
        raise InvalidRequest(f"{key} is required", param=key)
    return value


async def _job_submit(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    _alive(k, c)
    kind = _str(a, "kind")
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}", param="kind")
    body = a.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest("body must be an object: the request to run", param="body")
    key = _opt_str(a, "idempotency_key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"idempotency_key must be 1..{MAX_IDEMPOTENCY_KEY} characters",
            param="idempotency_key",
        )
    job, created = await k.jobs.submit(c, kind, body, key)
    return {**job.to_dict(), "replayed": not created}


async def _job_get(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    _alive(k, c)
    return k.jobs.visible(c, _str(a, "id")).to_dict()


async def _job_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    _alive(k, c)
    status = _opt_str(a, "status")
    limit = a.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_JOB_LIST:
        raise InvalidRequest(f"limit must be an integer 1..{MAX_JOB_LIST}", param="limit")
    jobs = k.jobs.list_jobs(
        c,
        _opt_str(a, "owner"),
        JobStatus.parse(status) if status is not None else None,
        limit,
        _opt_str(a, "before"),
    )
    return [j.to_dict(full=False) for j in jobs]


async def _job_cancel(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    _alive(k, c)
    return k.jobs.cancel(c, _str(a, "id")).to_dict()


JOB_SYSCALLS = (
    Syscall(
        "job.submit",
        _job_submit,
        ALL,
        "journal a batch job (kind chat|completion, body, idempotency_key); on disk on return",
    ),
    Syscall("job.get", _job_get, READERS, "one job: status, and its result or the reason"),
    Syscall("job.list", _job_list, READERS, "the caller's jobs, newest first (status, limit)"),
    Syscall("job.cancel", _job_cancel, ALL, "cancel a job; a running one stops at its next token"),
)
