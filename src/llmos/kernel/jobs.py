"""The job runner: takes journaled jobs (journal.py) and runs them through the
scheduler, a bounded number at a time, at batch priority.

Invariants:
- at most `capacity` (device slots x JOBS_PER_SLOT) jobs are RUNNING in this
  kernel, so jobs never flood the run queue ahead of interactive requests and a
  full queue (429) delays a job, never fails it;
- every RUNNING job of this kernel has exactly one task in `_active`; its outcome
  (result, reason, or back to QUEUED) is written by that task only;
- jobs run in one process per owner, `<owner>:jobs`, at JOB_PRIORITY.
A job whose request fails on the device is started again, up to MAX_JOB_ATTEMPTS
starts in all; any other error fails it with that error as the reason."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmos.errors import (
    DeviceError,
    Hidden,
    InvalidRequest,
    LlmosError,
    NotFound,
    Overloaded,
    Unavailable,
)
from llmos.kernel import prompts
from llmos.kernel.journal import Job, JobStatus, Journal, Submitter
from llmos.kernel.process import Process
from llmos.kernel.request import Done, Request
from llmos.kernel.tokens import Caller
from llmos.params import JOB_PRIORITY, JOB_RETRY_MAX_S, JOBS_PER_SLOT, MAX_JOB_ATTEMPTS
from llmos.types import Snapshot, Token

if TYPE_CHECKING:
    from llmos.devices.base import Device
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)

RETRYABLE = (DeviceError, Unavailable)  # the engine failed, not the request


def _build(kind: str) -> Any:
    return prompts.chat_snapshot if kind == "chat" else prompts.completion_snapshot


def outcome(req: Request, tokens: list[Token]) -> dict[str, Any]:
    """What a completed job keeps: the raw result, rendered by the front end."""
    logprobs = req.snapshot.params.logprobs
    return {
        "model": req.model,
        "text": req.text,
        "finish_reason": req.finish_reason,
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": req.output_tokens,
        "cached_tokens": req.cached_tokens,
        "created": int(time.time()),
        "tokens": [dataclasses.asdict(t) for t in tokens] if logprobs else None,
    }


class JobRunner:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.journal = Journal(kernel.settings.db_path)
        self.capacity = max(1, sum(d.slots for d in kernel.devices) * JOBS_PER_SLOT)
        self._active: dict[str, asyncio.Task[None]] = {}  # job id -> the task running it
        self._pids: dict[str, int] = {}  # owner -> their jobs process
        # asked in turn which process a job runs in (e.g. its batch's); else the owner's
        self.placements: list[Callable[[Job], Process | None]] = []
        self._wake = asyncio.Event()  # a job was submitted or a task ended
        self.ended: list[Callable[[], None]] = []  # told when a job's outcome is written
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Recover what a crash left RUNNING, then start taking jobs."""
        requeued, failed = self.journal.recover(MAX_JOB_ATTEMPTS)
        if requeued or failed:
            log.warning("job journal: %d interrupted jobs start over, %d gave up", requeued, failed)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="jobs")

    async def stop(self) -> None:
        """Running jobs go back to QUEUED (their start does not count); the next
        kernel on this database runs them."""
        tasks = [t for t in (self._loop_task, *self._active.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self.journal.close()

    # -- what the syscalls call ----------------------------------------------------
    async def submit(
        self, caller: Caller, kind: str, body: dict[str, Any], key: str | None
    ) -> tuple[Job, bool]:
        """Validate the request as llm.chat / llm.complete would, journal it (on disk
        when this returns); (job, False) if `key` was used before for the same."""
        try:
            body = json.loads(json.dumps(body))  # exactly what the journal will hold
        except (TypeError, ValueError):
            raise InvalidRequest("the request body must be plain JSON", param="body") from None
        if body.get("stream"):
            raise InvalidRequest(
                "a job cannot stream: its result is kept for GET /v1/jobs/{id}",
                param="body.stream",
            )
        if key is not None:
            earlier = self.journal.by_key(caller.owner, key)
            if earlier is not None:
                return self._same(earlier, kind, body), False
        await self._snapshot(kind, body)  # bad input is an error now, not a failed job
        who = Submitter(caller.token_id, caller.owner, caller.role, caller.pid)
        job, created = self.journal.add(who, kind, body, key)
        if created:
            self._wake.set()
        else:  # the same key, submitted while we validated
            job = self._same(job, kind, body)
        return job, created

    def visible(self, caller: Caller, job_id: str) -> Job:
        """The job, if the caller may see it: its owner's, or an admin; else 404
        (whether someone else's job exists must not leak)."""
        job = self.journal.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}", param="id")
        if not (caller.is_admin or caller.owner == job.owner):
            raise Hidden(f"no job with id {job_id!r}", param="id")  # audited as a denial
        return job

    def list_jobs(
        self,
        caller: Caller,
        owner: str | None,
        status: JobStatus | None,
        limit: int,
        before: str | None,
    ) -> list[Job]:
        if not caller.is_admin:
            if owner is not None and owner != caller.owner:
                raise Hidden(f"no jobs visible for owner {owner!r}", param="owner")
            owner = caller.owner
        if before is not None:
            try:
                self.visible(caller, before)
            except NotFound as exc:
                exc.param = "before"
                raise
        return self.journal.list(owner, status, limit, before)

    def cancel(self, caller: Caller, job_id: str) -> Job:
        """A queued job never starts; a running one stops at its next token.
        A finished job is left as it is."""
        job = self.visible(caller, job_id)
        if self.journal.cancel(job.id, f"cancelled by {caller.owner}"):
            task = self._active.get(job.id)
            if task is not None:
                task.cancel()
        after = self.journal.get(job.id)
        assert after is not None
        return after

    # -- mechanism -----------------------------------------------------------------
    def _same(self, job: Job, kind: str, body: dict[str, Any]) -> Job:
        if job.kind != kind or job.request != body:
            raise InvalidRequest(
                f"this Idempotency-Key was used for a different request (job {job.id})",
                param="idempotency_key",
            )
        return job

    async def _snapshot(self, kind: str, body: dict[str, Any]) -> tuple[Device, Snapshot]:
        """Errors name the field inside the job's `body`."""
        try:
            dev = self.kernel.device_for(body.get("model"))
            return dev, await _build(kind)(dev, body)
        except LlmosError as exc:
            exc.param = f"body.{exc.param}" if exc.param else "body"
            raise

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._fill()
            except sqlite3.Error:  # e.g. the database stayed locked: try again soon
                log.exception("job journal: could not take the next job")
                await asyncio.sleep(1.0)
                continue
            await self._wake.wait()

    def _fill(self) -> None:
        while len(self._active) < self.capacity:
            job = self.journal.claim()
            if job is None:
                return
            task = asyncio.get_running_loop().create_task(self._run(job), name=job.id)
            self._active[job.id] = task
            task.add_done_callback(functools.partial(self._ended, job.id))

    def _ended(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._active.pop(job_id, None)
        self._wake.set()
        for tell in self.ended:
            tell()

    async def _run(self, job: Job) -> None:
        req: Request | None = None
        try:
            req = await self._enqueue(job)
            if req is not None:
                await self._finish(job, req)
        except asyncio.CancelledError:  # the kernel is stopping, or the job was cancelled
            if req is not None:
                self.kernel.cancel(req, f"job {job.id} was stopped")
            self.journal.requeue(job.id, give_back=True)  # a no-op if it was cancelled
            raise
        except Exception:  # a bug: the job must still end with a reason
            log.exception("job %s failed inside the kernel", job.id)
            if req is not None:
                self.kernel.cancel(req, f"job {job.id} failed")
            self.journal.fail(job.id, "internal error while running the job", "internal")

    async def _enqueue(self, job: Job) -> Request | None:
        """The job's request on the run queue; None if the job failed instead. A full
        queue is waited out: a job is never failed for a 429."""
        try:
            dev, snapshot = await self._snapshot(job.kind, job.request)
        except LlmosError as exc:  # e.g. the model is no longer served after a restart
            self.journal.fail(job.id, exc.message, exc.code or "invalid_request")
            return None
        while True:
            try:
                return self.kernel.enqueue(
                    self._process_for(job), dev, job.kind, snapshot, deadline=False
                )
            except Overloaded as exc:
                await asyncio.sleep(min(float(exc.retry_after), JOB_RETRY_MAX_S))
            except LlmosError as exc:
                self.journal.fail(job.id, exc.message, exc.code or "error")
                return None

    async def _finish(self, job: Job, req: Request) -> None:
        tokens: list[Token] = []
        while True:
            event = await req.events.get()
            if isinstance(event, Done):
                break
            tokens.extend(event.tokens)
        error = event.error
        if error is None:
            self.journal.complete(job.id, outcome(req, tokens))
        elif isinstance(error, RETRYABLE) and job.attempts < MAX_JOB_ATTEMPTS:
            log.warning("job %s: %s; starting it again", job.id, error.message)
            self.journal.requeue(job.id)
        else:
            self.journal.fail(job.id, error.message, error.code or "error")

    def _process_for(self, job: Job) -> Process:
        for place in self.placements:
            proc = place(job)
            if proc is not None:
                return proc
        return self._process(job.owner)

    def _process(self, owner: str) -> Process:
        """The owner's jobs process (a new one if there is none alive)."""
        pid = self._pids.get(owner)
        proc = self.kernel.procs.find(pid) if pid is not None else None
        if proc is None or not proc.state.alive:
            name = f"{owner}:jobs"
            alive = (
                p
                for p in self.kernel.procs.list()
                if p.owner == owner and p.name == name and p.state.alive
            )
            proc = next(alive, None)
            if proc is None:
                proc = self.kernel.procs.add(name, owner, JOB_PRIORITY, implicit=True)
                self.kernel.store.save_process(proc)
            self._pids[owner] = proc.pid
        return proc
