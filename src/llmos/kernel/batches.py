"""The batch runner: OpenAI-compatible batches on top of the job journal.

A batch's lines arrive already parsed by the front end (one dict per input line:
the kernel arguments of llm.chat / llm.complete, or the reason it is rejected).
Each runnable line becomes one journaled job (jobs.py) with the idempotency key
`<batch id>:<line>`, submitted lazily so that at most `max_concurrent` of a
batch's jobs are unfinished at once; the jobs run at batch priority in the
owner's `<owner>:jobs` process (exempt from the anomaly throttle).

Invariants:
- the runner's state is all on disk (batchstore.py and the jobs table): after a
  crash, the next kernel's runner picks every active batch up where it was;
- admission: the `max_concurrent` of all in_progress batches sums to at most the
  kernel's slots (ΣCᵢ ≤ C); a batch that does not fit yet waits in `validating`;
- a batch's output and error files are generated from its lines and their jobs,
  one record per line, so no line is written twice and none is lost.

Status moves: validating → in_progress → finalizing → completed, and
in_progress → cancelling → cancelled, in_progress → expired (deadline or window)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from llmos.errors import Hidden, InvalidRequest, LlmosError, NotFound
from llmos.kernel import bgtask
from llmos.kernel.batchfiles import FileObjects
from llmos.kernel.batchstore import Batch, BatchStore, Line
from llmos.kernel.journal import Job, JobStatus
from llmos.kernel.process import Process, ProcState
from llmos.kernel.tokens import Caller
from llmos.params import BATCH_TICK_S, JOB_PRIORITY, MAX_BATCH_TOKENS

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)

WINDOW_S = {"24h": 86_400.0}
FINISHED = {s.label for s in JobStatus if s.finished}


def _file_id(batch_id: str, part: str) -> str:
    return "file-" + hashlib.sha256(f"{batch_id}/{part}".encode()).hexdigest()[:24]


class BatchRunner:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        db = sqlite3.connect(
            str(kernel.settings.db_path), check_same_thread=False, isolation_level=None
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        db.execute("PRAGMA busy_timeout=5000")
        self.db = db
        self.files = FileObjects(db)
        self.store = BatchStore(db)
        self.slots = max(1, sum(d.slots for d in kernel.devices))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pids: dict[str, int] = {}  # batch id -> its process
        self._cache: dict[str, list[Line]] = {}  # batch id -> its lines, while it runs
        kernel.jobs.placements.append(self._place)  # a batch's jobs run in its process

    def start(self) -> None:
        self.kernel.jobs.ended.append(self._wake.set)  # a line done: the next one, now
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batches")

    async def stop(self) -> None:
        await bgtask.cancel(self._task)
        self._task = None
        self.db.close()

    # -- what the syscalls call ----------------------------------------------------
    def create(
        self,
        caller: Caller,
        endpoint: str,
        input_file_id: str,
        window: str,
        metadata: dict[str, str] | None,
        lines: list[dict[str, Any]],
        resources: dict[str, Any],
    ) -> Batch:
        self.files.visible_to(caller, input_file_id)
        max_concurrent = resources.get("max_concurrent") or self.slots
        if max_concurrent > self.slots:
            raise InvalidRequest(
                f"llmos_max_concurrent is at most the kernel's {self.slots} slots",
                param="metadata.llmos_max_concurrent",
            )
        need = sum(int(ln.get("max_tokens") or 0) for ln in lines if ln.get("error") is None)
        budget = resources.get("token_budget")
        if budget is not None and budget > MAX_BATCH_TOKENS:
            raise InvalidRequest(
                f"llmos_token_budget is at most {MAX_BATCH_TOKENS}",
                param="metadata.llmos_token_budget",
            )
        if need > (budget or MAX_BATCH_TOKENS):
            raise InvalidRequest(
                f"the batch's lines ask for {need} tokens (sum of max_tokens), over its"
                f" budget of {budget or MAX_BATCH_TOKENS}",
                param="metadata.llmos_token_budget" if budget else "input_file_id",
            )
        now = time.time()
        deadline = resources.get("deadline_s")
        fields = {
            "owner": caller.owner,
            "token_id": caller.token_id,
            "role": caller.role,
            "endpoint": endpoint,
            "input_file_id": input_file_id,
            "completion_window": window,
            "metadata": metadata,
            "max_concurrent": max_concurrent,
            "priority": resources.get("priority", JOB_PRIORITY),
            "token_budget": budget or need,
            "deadline_at": now + deadline if deadline else None,
            "total": len(lines),
            "failed": sum(1 for ln in lines if ln.get("error") is not None),
            "expires_at": now + WINDOW_S[window],
        }
        batch = self.store.add(fields, lines)
        self._wake.set()
        return batch

    def visible(self, caller: Caller, batch_id: str) -> Batch:
        batch = self.store.get(batch_id)
        if batch is None:
            raise NotFound(f"no batch with id {batch_id!r}", param="batch_id")
        if not (caller.is_admin or caller.owner == batch.owner):
            raise Hidden(f"no batch with id {batch_id!r}", param="batch_id")
        return batch

    def page(self, caller: Caller, limit: int, after: str | None) -> list[Batch]:
        mark = None
        if after is not None:
            try:
                mark = self.visible(caller, after)
            except NotFound as exc:
                exc.param = "after"
                raise
        return self.store.page(None if caller.is_admin else caller.owner, limit, mark)

    def cancel(self, caller: Caller, batch_id: str) -> Batch:
        """Unstarted lines never run; running ones stop at their next token; lines
        already done stay in the output file. A finished batch is left as it is."""
        batch = self.visible(caller, batch_id)
        if batch.status in ("validating", "in_progress"):
            self.store.update(batch.id, status="cancelling")
            self._wake.set()
        return self.visible(caller, batch_id)

    def records(self, batch: Batch, part: str) -> list[dict[str, Any]]:
        """One record per line of the output ("output") or error ("error") file, in
        input order: {idx, custom_id, job (a job dict) | error {code, message}}."""
        states = self.store.job_states(batch.owner, batch.id)
        ended = {"cancelled": "batch_cancelled", "expired": "batch_expired"}.get(batch.status)
        out: list[dict[str, Any]] = []
        for line in self.store.lines(batch.id):
            rec: dict[str, Any] = {"idx": line.idx, "custom_id": line.custom_id}
            job_id, status = states.get(line.idx, (None, None))
            if line.error is not None:
                rec["error"] = line.error
            elif job_id is None or status not in ("completed", "failed"):
                if ended is None:
                    continue  # still to run (the file is not final yet)
                rec["error"] = {"code": ended, "message": f"the batch was {batch.status}"}
            else:
                job = self.kernel.jobs.journal.get(job_id)
                assert job is not None
                if job.status is JobStatus.COMPLETED:
                    rec["job"] = job.to_dict()
                else:
                    rec["error"] = job.error or {"code": "failed", "message": "the request failed"}
                    rec["job"] = job.to_dict()
            if ("error" in rec) == (part == "error"):
                out.append(rec)
        return out

    # -- mechanism -----------------------------------------------------------------
    def _lines(self, batch_id: str) -> list[Line]:
        """A running batch's lines, read once (only `reject` changes them)."""
        if batch_id not in self._cache:
            self._cache[batch_id] = self.store.lines(batch_id)
        return self._cache[batch_id]

    def _place(self, job: Job) -> Process | None:
        """The process of the batch a job belongs to (None: not a batch's job)."""
        batch_id, sep, _ = (job.idempotency_key or "").partition(":")
        if not (sep and batch_id.startswith("batch_")):
            return None
        batch = self.store.get(batch_id)
        return None if batch is None else self._process(batch, create=True)

    def _process(self, batch: Batch, create: bool) -> Process | None:
        """`<owner>:<batch id>:jobs` at the batch's priority, holding at most its
        slots (the anomaly throttle exempts `…:jobs` processes: batches are
        throughput work by design)."""
        pid = self._pids.get(batch.id)
        proc = self.kernel.procs.find(pid) if pid is not None else None
        if proc is not None and proc.state.alive:
            return proc
        name = f"{batch.owner}:{batch.id}:jobs"
        alive = (p for p in self.kernel.procs.list() if p.name == name and p.state.alive)
        proc = next(alive, None)
        if proc is None:
            if not create:
                return None
            proc = self.kernel.procs.add(
                name,
                batch.owner,
                batch.priority,
                implicit=True,
                max_concurrent=batch.max_concurrent,
            )
            self.kernel.store.save_process(proc)
        self._pids[batch.id] = proc.pid
        return proc

    def _end_process(self, batch: Batch) -> None:
        proc = self._process(batch, create=False)
        if proc is not None and not self.kernel.live.get(proc.pid):
            proc.move(ProcState.EXITED)
            self.kernel.store.save_process(proc)
        self._pids.pop(batch.id, None)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                for batch in self.store.active():
                    try:
                        await self._step(batch)
                    except (sqlite3.Error, LlmosError):  # e.g. the database stayed locked
                        log.exception("batch %s: could not advance; trying again", batch.id)
            except sqlite3.Error:
                log.exception("batches: could not read the active batches")
            await bgtask.wait(self._wake, BATCH_TICK_S)  # or a tick: deadlines, progress

    async def _step(self, batch: Batch) -> None:
        now = time.time()
        if batch.status == "validating":
            running = sum(b.max_concurrent for b in self.store.active() if b.status != "validating")
            if running + batch.max_concurrent <= self.slots:
                self.store.update(batch.id, status="in_progress")
            return
        if batch.status == "finalizing":
            self._finalize(batch, "completed")
            return
        ends = [batch.times["expires_at"], batch.deadline_at]
        expired = any(end is not None and now >= end for end in ends)
        if batch.status == "cancelling" or expired:
            if self._stop_jobs(batch):
                self._finalize(batch, "cancelled" if batch.status == "cancelling" else "expired")
            return
        await self._submit_more(batch)

    def _stop_jobs(self, batch: Batch) -> bool:
        """Cancel the batch's unfinished jobs; True when none is left running."""
        caller = Caller(batch.token_id, batch.owner, batch.role)
        settled = True
        for job_id, status in self.store.job_states(batch.owner, batch.id).values():
            if status not in FINISHED:
                after = self.kernel.jobs.cancel(caller, job_id)
                settled = settled and after.status.finished
        return settled

    async def _submit_more(self, batch: Batch) -> None:
        states = self.store.job_states(batch.owner, batch.id)
        every = self._lines(batch.id)
        lines = [ln for ln in every if ln.error is None]
        done = sum(1 for _, s in states.values() if s == "completed")
        failed = len(every) - len(lines)
        failed += sum(1 for _, s in states.values() if s in ("failed", "cancelled"))
        unfinished = sum(1 for _, s in states.values() if s not in FINISHED)
        if (done, failed) != (batch.completed, batch.failed):
            self.store.update(batch.id, completed=done, failed=failed)
        todo = [ln for ln in lines if ln.idx not in states]
        if not todo and not unfinished:
            self.store.update(batch.id, status="finalizing")
            self._finalize(batch, "completed")
            return
        caller = Caller(batch.token_id, batch.owner, batch.role)
        for line in todo[: max(0, batch.max_concurrent - unfinished)]:
            assert line.kind is not None and line.request is not None
            try:
                await self.kernel.jobs.submit(
                    caller, line.kind, line.request, f"{batch.id}:{line.idx}"
                )
            except LlmosError as exc:  # e.g. the prompt does not fit the model's context
                error = {"code": exc.code or "invalid_request", "message": exc.message}
                self.store.reject(batch.id, line.idx, error)
                self._cache.pop(batch.id, None)

    def _finalize(self, batch: Batch, status: str) -> None:
        """Name the output and error files and end the batch, in one transaction;
        run again after a crash it changes nothing that was already written."""
        fresh = self.store.get(batch.id)
        assert fresh is not None
        fresh = Batch(**{**fresh.__dict__, "status": status})
        parts = {p: len(self.records(fresh, p)) for p in ("output", "error")}
        states = self.store.job_states(batch.owner, batch.id)
        done = sum(1 for _, s in states.values() if s == "completed")
        failed = parts["error"]  # every error record is a failed line ...
        if status != "completed":  # ... except lines the cancel or expiry stopped
            failed = sum(1 for ln in self.store.lines(batch.id) if ln.error is not None)
            failed += sum(1 for _, s in states.values() if s == "failed")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            ids: dict[str, str | None] = {}
            for part, count in parts.items():
                ids[part] = _file_id(batch.id, part) if count else None
                if count:
                    self.files.generated(_file_id(batch.id, part), batch.owner, batch.id, part, 0)
            self.store.update(
                batch.id,
                status=status,
                completed=done,
                failed=failed,
                output_file_id=ids["output"],
                error_file_id=ids["error"],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._end_process(batch)
        self._cache.pop(batch.id, None)
