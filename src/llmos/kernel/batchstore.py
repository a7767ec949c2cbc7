"""The batch tables: one row per batch, one per input line.

A line is either rejected at submit (`error` set, never run) or run as exactly one
job of the job journal (journal.py), found by its idempotency key
`<batch id>:<line index>`: submitting a line again after a crash returns the same
job, so no line runs twice and none is dropped. Everything a batch's output and
error files hold is derived from these rows and those jobs."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token_id TEXT NOT NULL,
    role TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT,
    max_concurrent INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    token_budget INTEGER NOT NULL,
    deadline_at REAL,
    total INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    in_progress_at REAL, finalizing_at REAL, completed_at REAL, failed_at REAL,
    expired_at REAL, cancelling_at REAL, cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS batches_owner ON batches(owner, created_at);
CREATE TABLE IF NOT EXISTS batch_lines (
    batch_id TEXT NOT NULL,
    idx INTEGER NOT NULL,       -- 0-based line number in the input file
    custom_id TEXT,
    kind TEXT,                  -- "chat" | "completion"
    request TEXT,               -- the kernel's arguments, JSON; NULL if rejected
    error TEXT,                 -- {code, message}: rejected, never run
    PRIMARY KEY (batch_id, idx)
);
"""

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TIMES = (
    "created_at",
    "expires_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@dataclass(frozen=True)
class Line:
    idx: int
    custom_id: str | None
    kind: str | None
    request: dict[str, Any] | None
    error: dict[str, Any] | None


@dataclass(frozen=True)
class Batch:
    id: str
    owner: str
    token_id: str
    role: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    metadata: dict[str, str] | None
    max_concurrent: int
    priority: int
    token_budget: int
    deadline_at: float | None
    total: int
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict[str, Any]] | None
    times: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's Batch object, plus `owner` and the llmos resources it holds."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "owner": self.owner,
            "llmos": {
                "max_concurrent": self.max_concurrent,
                "priority": self.priority,
                "token_budget": self.token_budget,
                "deadline_at": self.deadline_at,
            },
        }
        for name, value in self.times.items():
            out[name] = None if value is None else int(value)
        return out


def _batch(r: sqlite3.Row) -> Batch:
    return Batch(
        r["id"],
        r["owner"],
        r["token_id"],
        r["role"],
        r["endpoint"],
        r["input_file_id"],
        r["completion_window"],
        r["status"],
        json.loads(r["metadata"]) if r["metadata"] else None,
        r["max_concurrent"],
        r["priority"],
        r["token_budget"],
        r["deadline_at"],
        r["total"],
        r["completed"],
        r["failed"],
        r["output_file_id"],
        r["error_file_id"],
        json.loads(r["errors"]) if r["errors"] else None,
        {name: r[name] for name in TIMES},
    )


def _line(r: sqlite3.Row) -> Line:
    return Line(
        r["idx"],
        r["custom_id"],
        r["kind"],
        json.loads(r["request"]) if r["request"] else None,
        json.loads(r["error"]) if r["error"] else None,
    )


class BatchStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    def add(self, fields: dict[str, Any], lines: list[dict[str, Any]]) -> Batch:
        """The batch and all its lines, in one transaction (on disk on return)."""
        batch_id = "batch_" + secrets.token_hex(12)
        now = time.time()
        row = {**fields, "id": batch_id, "status": "validating", "created_at": now}
        row["metadata"] = json.dumps(row["metadata"]) if row.get("metadata") else None
        names = ", ".join(row)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                f"INSERT INTO batches ({names}) VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )
            self.db.executemany(
                "INSERT INTO batch_lines (batch_id, idx, custom_id, kind, request, error)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (
                        batch_id,
                        i,
                        ln.get("custom_id"),
                        ln.get("kind"),
                        json.dumps(ln["request"]) if ln.get("request") is not None else None,
                        json.dumps(ln["error"]) if ln.get("error") is not None else None,
                    )
                    for i, ln in enumerate(lines)
                ],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        got = self.get(batch_id)
        assert got is not None
        return got

    def get(self, batch_id: str) -> Batch | None:
        r = self.db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return None if r is None else _batch(r)

    def active(self) -> list[Batch]:
        marks = ", ".join("?" for _ in ACTIVE)
        sql = f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY created_at, id"
        return [_batch(r) for r in self.db.execute(sql, ACTIVE)]

    def page(self, owner: str | None, limit: int, after: Batch | None) -> list[Batch]:
        """Newest first; `after`: the last batch of the previous page."""
        sql, args = "SELECT * FROM batches WHERE 1", list[Any]()
        if owner is not None:
            sql, args = sql + " AND owner = ?", [owner]
        if after is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            created = after.times["created_at"]
            args += [created, created, after.id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [_batch(r) for r in self.db.execute(sql, [*args, limit])]

    def lines(self, batch_id: str) -> list[Line]:
        sql = "SELECT * FROM batch_lines WHERE batch_id = ? ORDER BY idx"
        return [_line(r) for r in self.db.execute(sql, (batch_id,))]

    def reject(self, batch_id: str, idx: int, error: dict[str, Any]) -> None:
        """A line the kernel refused when it came to run it (e.g. its prompt is too
        long for the model): never submitted, so it goes to the error file."""
        self.db.execute(
            "UPDATE batch_lines SET error = ? WHERE batch_id = ? AND idx = ?",
            (json.dumps(error), batch_id, idx),
        )

    def update(self, batch_id: str, **values: Any) -> None:
        """Set columns; `status` moves also stamp `<status>_at` (once)."""
        status = values.get("status")
        if status is not None and f"{status}_at" in TIMES:
            values.setdefault(f"{status}_at", time.time())
        if "errors" in values:
            values["errors"] = json.dumps(values["errors"]) if values["errors"] else None
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE batches SET {sets} WHERE id = ?", (*values.values(), batch_id))

    def job_states(self, owner: str, batch_id: str) -> dict[int, tuple[str, str]]:
        """{line index: (job id, job status)} of the lines already submitted."""
        prefix = f"{batch_id}:"
        rows = self.db.execute(
            "SELECT id, status, idempotency_key FROM jobs WHERE owner = ?"
            " AND idempotency_key >= ? AND idempotency_key < ?",
            (owner, prefix, f"{batch_id};"),
        )
        return {int(r["idempotency_key"][len(prefix) :]): (r["id"], r["status"]) for r in rows}
