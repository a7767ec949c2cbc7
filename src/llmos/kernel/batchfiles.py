"""OpenAI file objects (`file-<hex>`): the inputs and results of batches.

They live in their own table, apart from the path-addressed file store
(storage.py): an OpenAI file has an id, a purpose and immutable bytes, not a path
and versions. A batch's output and error files are *generated*: their row names
the batch and which of its records they hold, and the front end renders the
lines from the batch's journaled per-line results on read — so a line can be
neither lost nor written twice (batches.py).

Invariant: an uploaded file's `data` never changes after the INSERT commits."""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from llmos.errors import Hidden, InvalidRequest, NotFound, PayloadTooLarge
from llmos.kernel.tokens import Caller
from llmos.params import MAX_FILE_BYTES

SCHEMA = """
CREATE TABLE IF NOT EXISTS oai_files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data BLOB,              -- NULL for a generated file
    batch_id TEXT,          -- a generated file: the batch ...
    part TEXT               -- ... and "output" or "error"
);
CREATE INDEX IF NOT EXISTS oai_files_owner ON oai_files(owner, created_at);
"""

PURPOSES = ("batch", "batch_output", "assistants", "fine-tune", "user_data", "vision", "evals")
MAX_FILENAME = 255


@dataclass(frozen=True)
class FileObject:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    batch_id: str | None = None
    part: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "owner": self.owner,
            "batch_id": self.batch_id,
            "part": self.part,
        }


def _file(r: sqlite3.Row) -> FileObject:
    return FileObject(
        r["id"],
        r["owner"],
        r["purpose"],
        r["filename"],
        r["bytes"],
        r["created_at"],
        r["batch_id"],
        r["part"],
    )


def new_id() -> str:
    return "file-" + secrets.token_hex(12)


class FileObjects:
    """The table, on the batch runner's connection (one writer at a time)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    def create(self, owner: str, purpose: str, filename: str, data: bytes) -> FileObject:
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
        if not filename or len(filename) > MAX_FILENAME:
            raise InvalidRequest(f"filename must be 1..{MAX_FILENAME} characters", param="file")
        if len(data) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"a file holds at most {MAX_FILE_BYTES} bytes", param="file")
        file_id = new_id()
        self.db.execute(
            "INSERT INTO oai_files (id, owner, purpose, filename, bytes, created_at, data)"
            " VALUES (?,?,?,?,?,?,?)",
            (file_id, owner, purpose, filename, len(data), time.time(), data),
        )
        return self.visible_to(None, file_id)

    def generated(self, file_id: str, owner: str, batch_id: str, part: str, size: int) -> None:
        """Record a batch's output or error file; a second call (after a crash
        between the two steps of finalizing) changes nothing."""
        self.db.execute(
            "INSERT OR IGNORE INTO oai_files (id, owner, purpose, filename, bytes, created_at,"
            " batch_id, part) VALUES (?,?,?,?,?,?,?,?)",
            (file_id, owner, "batch_output", f"{batch_id}_{part}.jsonl", size, time.time(),
             batch_id, part),
        )  # fmt: skip

    def visible_to(self, caller: Caller | None, file_id: str) -> FileObject:
        """The file, if `caller` (None: the kernel) may see it; else 404."""
        row = self.db.execute("SELECT * FROM oai_files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise NotFound(f"no file with id {file_id!r}", param="file_id")
        f = _file(row)
        if caller is not None and not (caller.is_admin or caller.owner == f.owner):
            raise Hidden(f"no file with id {file_id!r}", param="file_id")
        return f

    def data(self, file_id: str) -> bytes | None:
        row = self.db.execute("SELECT data FROM oai_files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None or row["data"] is None else bytes(row["data"])

    def delete(self, caller: Caller, file_id: str) -> None:
        f = self.visible_to(caller, file_id)
        self.db.execute("DELETE FROM oai_files WHERE id = ?", (f.id,))

    def page(
        self, caller: Caller, purpose: str | None, limit: int, after: str | None
    ) -> list[FileObject]:
        """Newest first; `after`: the last id of the previous page."""
        sql, args = "SELECT * FROM oai_files WHERE 1", list[Any]()
        if not caller.is_admin:
            sql, args = sql + " AND owner = ?", [caller.owner]
        if purpose is not None:
            sql, args = sql + " AND purpose = ?", [*args, purpose]
        if after is not None:
            mark = self.visible_to(caller, after)
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [mark.created_at, mark.created_at, mark.id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [_file(r) for r in self.db.execute(sql, [*args, limit])]
