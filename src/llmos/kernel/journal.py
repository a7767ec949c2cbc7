"""The job journal: batch jobs that survive a crash of the kernel.

One table in the kernel's SQLite file, through a connection of its own with
`synchronous=FULL` (WAL): a commit returns only after the WAL is fsynced, so a job
id handed out, or a result recorded, is never lost to a kill -9 or a power cut.

Invariants:
- a job row is committed before its id leaves the kernel;
- every state change is one UPDATE guarded by the expected current status, and a
  result is written in the same statement as `completed`: a job completes at most
  once, and a finished job is never changed again;
- `attempts` counts the starts of a job; a start that a crash interrupted counts
  (`recover` gives up after MAX_JOB_ATTEMPTS), a graceful shutdown gives its start
  back. The scheduler keeps no durable snapshot, so a resumed job starts over.

Used from the kernel's event loop thread only."""

from __future__ import annotations

import enum
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.errors import InvalidRequest


class JobStatus(enum.IntEnum):
    """Ordered: `status > RUNNING` means finished (terminal)."""

    QUEUED = 0  # journaled, waiting for the runner
    RUNNING = 1  # the runner took it: on the run queue or decoding
    COMPLETED = 2
    FAILED = 3
    CANCELLED = 4

    @property
    def finished(self) -> bool:
        return self > JobStatus.RUNNING

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str, param: str = "status") -> JobStatus:
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise InvalidRequest(f"status must be one of {names}", param=param) from None


# Legal transitions, in one place. RUNNING -> QUEUED is a restart (crash, shutdown,
# a device error worth retrying).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

KINDS = ("chat", "completion")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    token_id TEXT NOT NULL,
    role TEXT NOT NULL,
    pid INTEGER,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, owner, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);
"""


@dataclass(frozen=True)
class Submitter:
    """Who submitted a job: the token's id and role, and its process if any."""

    token_id: str
    owner: str
    role: str
    pid: int | None = None


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    kind: str  # "chat" | "completion"
    request: dict[str, Any]  # the kernel's arguments of llm.chat / llm.complete
    status: JobStatus
    submitter: Submitter
    attempts: int = 0
    result: dict[str, Any] | None = None  # the raw outcome (text, usage, …), if completed
    error: dict[str, Any] | None = None  # {message, code}, if failed or cancelled
    idempotency_key: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        """`full`: with the request and the result (a listing leaves them out)."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "job",
            "owner": self.owner,
            "kind": self.kind,
            "model": self.request.get("model"),
            "status": self.status.label,
            "error": self.error,
            "attempts": self.attempts,
            "idempotency_key": self.idempotency_key,
            "submitted_by": {
                "token_id": self.submitter.token_id,
                "role": self.submitter.role,
                "pid": self.submitter.pid,
            },
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if full:
            out["request"] = self.request
            out["result"] = self.result
        return out


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _job(r: sqlite3.Row) -> Job:
    return Job(
        id=r["id"],
        owner=r["owner"],
        kind=r["kind"],
        request=json.loads(r["request"]),
        status=JobStatus[r["status"].upper()],
        submitter=Submitter(r["token_id"], r["owner"], r["role"], r["pid"]),
        attempts=r["attempts"],
        result=_loads(r["result"]),
        error=_loads(r["error"]),
        idempotency_key=r["idempotency_key"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def _error(message: str, code: str) -> str:
    return json.dumps({"message": message, "code": code})


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- writes: each one statement, committed (and fsynced) before it returns ------
    def add(
        self,
        who: Submitter,
        kind: str,
        request: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Journal a new job; (job, True). With a key this owner used before, the
        job that key made, untouched: (job, False)."""
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}", param="kind")
        job_id = "job-" + secrets.token_hex(12)
        try:
            self.db.execute(
                "INSERT INTO jobs (id, owner, token_id, role, pid, kind, request, status,"
                " idempotency_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    who.owner,
                    who.token_id,
                    who.role,
                    who.pid,
                    kind,
                    json.dumps(request, separators=(",", ":")),
                    JobStatus.QUEUED.label,
                    idempotency_key,
                    time.time(),
                ),
            )
        except sqlite3.IntegrityError:
            if idempotency_key is None:
                raise
            earlier = self.by_key(who.owner, idempotency_key)
            if earlier is None:
                raise
            return earlier, False
        job = self.get(job_id)
        assert job is not None
        return job, True

    def claim(self) -> Job | None:
        """The next job, now RUNNING with one more attempt; None if none is queued.
        Fair across owners: the oldest queued job of the owner with the fewest jobs
        running, so one owner's big batch does not hold everyone else's back."""
        row = self.db.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?"
            " WHERE seq = (SELECT MIN(q.seq) AS first FROM jobs q WHERE q.status = 'queued'"
            "   GROUP BY q.owner ORDER BY (SELECT COUNT(*) FROM jobs r"
            "     WHERE r.status = 'running' AND r.owner = q.owner), first LIMIT 1)"
            " AND status = 'queued' RETURNING *",
            (time.time(),),
        ).fetchone()
        return None if row is None else _job(row)

    def complete(self, job_id: str, result: dict[str, Any]) -> bool:
        """RUNNING -> COMPLETED with its result, in one statement; False if the job
        was not running (cancelled meanwhile, or already finished)."""
        return self._move(
            job_id,
            JobStatus.COMPLETED,
            (JobStatus.RUNNING,),
            result=json.dumps(result, separators=(",", ":")),
            finished_at=time.time(),
        )

    def fail(self, job_id: str, message: str, code: str) -> bool:
        return self._move(
            job_id,
            JobStatus.FAILED,
            (JobStatus.QUEUED, JobStatus.RUNNING),
            error=_error(message, code),
            finished_at=time.time(),
        )

    def cancel(self, job_id: str, message: str) -> bool:
        return self._move(
            job_id,
            JobStatus.CANCELLED,
            (JobStatus.QUEUED, JobStatus.RUNNING),
            error=_error(message, "cancelled"),
            finished_at=time.time(),
        )

    def requeue(self, job_id: str, *, give_back: bool = False) -> bool:
        """RUNNING -> QUEUED, to start over. `give_back`: the start does not count
        (the kernel stopped it on purpose)."""
        sql = "attempts - 1" if give_back else "attempts"
        cur = self.db.execute(
            f"UPDATE jobs SET status = 'queued', attempts = {sql}, started_at = NULL"
            " WHERE id = ? AND status = 'running'",
            (job_id,),
        )
        return cur.rowcount == 1

    def recover(self, max_attempts: int) -> tuple[int, int]:
        """At start: jobs a crash left RUNNING go back to QUEUED, or FAIL if they
        have had `max_attempts` starts. Returns (requeued, failed)."""
        message = (
            f"the kernel stopped while this job ran its last allowed attempt "
            f"({max_attempts}); it is not started again"
        )
        self.db.execute("BEGIN IMMEDIATE")
        try:
            failed = self.db.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?"
                " WHERE status = 'running' AND attempts >= ?",
                (_error(message, "interrupted"), time.time(), max_attempts),
            ).rowcount
            requeued = self.db.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'"
            ).rowcount
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return requeued, failed

    def _move(
        self, job_id: str, to: JobStatus, sources: tuple[JobStatus, ...], **cols: Any
    ) -> bool:
        assert all(to in TRANSITIONS[s] for s in sources), (sources, to)
        sets = ", ".join(f"{c} = ?" for c in cols)
        marks = ", ".join("?" for _ in sources)
        cur = self.db.execute(
            f"UPDATE jobs SET status = ?, {sets} WHERE id = ? AND status IN ({marks})",
            (to.label, *cols.values(), job_id, *(s.label for s in sources)),
        )
        return cur.rowcount == 1

    # -- reads ---------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def by_key(self, owner: str, key: str) -> Job | None:
        row = self.db.execute(
            "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, key)
        ).fetchone()
        return None if row is None else _job(row)

    def list(
        self,
        owner: str | None,
        status: JobStatus | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Job]:
        """Newest first. `owner` None: everyone's; `before`: only jobs submitted
        before that job (a cursor: pass the last id of the previous page)."""
        where, args = ["1 = 1"], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if status is not None:
            where.append("status = ?")
            args.append(status.label)
        if before is not None:
            where.append("seq < (SELECT seq FROM jobs WHERE id = ?)")
            args.append(before)
        rows = self.db.execute(
            f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per status, everyone's."""
        rows = self.db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        out = {s.label: 0 for s in JobStatus}
        out.update({r["status"]: r["n"] for r in rows})
        return out
