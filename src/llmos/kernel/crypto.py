"""Encryption at rest: file contents, memory texts and conversation texts are sealed
with AES-256-GCM before they reach SQLite, and opened on the way out.

Keys (envelope encryption):
- the master key (32 bytes) comes from `LLMOS_KEY` or the file LLMOS_HOME/data-key
  (masterkey.py). It never enters the database.
- data keys (32 random bytes each) live in `data_keys`, wrapped by the master key
  (AES-GCM). Exactly one is `active`: every new seal uses it. After a rotation the
  old ones are `retiring` until no row uses them, then `retired`: their wrapped
  bytes are erased, so what was sealed with them is gone for good.

A sealed value: MAGIC | data key id (4 bytes, big-endian) | nonce (12) | ciphertext
and tag. Its associated data is that header and the identity of its row (table,
column and the columns that name the row), so a value moved to another row or
column fails to open, as does any altered byte: `Unavailable` (code
`data_integrity`), never silent garbage.

Rotation without downtime: `rotate()` makes a new data key active at once; `sweep()`
(keysweep.py) then re-seals every row under it in small batches, yielding to the event loop
between batches, so reads and writes go on (every value names its key). When no row
uses a non-active key, those keys are retired. A rotation during a sweep only
makes the sweep go round again; a sweep cut short by a restart is resumed at start.

Search trade-off: the FTS5 tables are contentless and fed a bag of each text's words
(ftstext.py), so the index tells which words occur in an owner's texts and how
often, not the texts nor their order. Embedding vectors are derived data kept in
clear as well; paths, tags, metadata, sizes and times are not encrypted.

Databases from before encryption: each store `adopt`s its columns at start, sealing
every plaintext value and rebuilding its index in one transaction, then the
database is vacuumed so no freed page keeps the old plaintext."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmos.errors import InvalidRequest, Unavailable
from llmos.kernel.masterkey import ENV, KEY_BYTES, master_key

log = logging.getLogger(__name__)

MAGIC = b"llx1"
NONCE = 12
HEADER = len(MAGIC) + 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    wrapped BLOB,
    created_at REAL NOT NULL,
    retired_at REAL
);
CREATE TABLE IF NOT EXISTS sealed_columns (
    name TEXT PRIMARY KEY,
    sealed_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Sealed:
    """A column whose values are sealed, and the columns that name a value's row."""

    table: str
    column: str
    keys: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def identity(self, values: Sequence[object]) -> bytes:
        return json.dumps([self.table, self.column, *values]).encode()


class KeyRing:
    """The master key, the data keys it unwraps, and the columns sealed with them.
    Used from the event loop thread only, on the kernel's connection."""

    def __init__(self, db: sqlite3.Connection, master: bytes, source: str) -> None:
        if len(master) != KEY_BYTES:
            raise InvalidRequest(f"the master key must be {KEY_BYTES} bytes", param="key")
        self.db = db
        self.source = source  # where the master key came from (for status)
        self._master = AESGCM(master)
        self._keys: dict[int, AESGCM] = {}  # unwrapped data keys not yet retired
        self.active = 0
        self.columns: list[Sealed] = []
        self.sweeping = False
        self.error: str | None = None  # why the last sweep stopped, if it failed
        self.resealed = 0  # rows re-sealed by sweeps since start
        db.executescript(SCHEMA)
        self._unwrap_all()
        if not self.active:
            self._new_key()

    @classmethod
    def load(cls, db: sqlite3.Connection, home: Path, env: str | None) -> KeyRing:
        """The ring of this database, its master key from `env` (LLMOS_KEY) or the key
        file (masterkey.py)."""
        db.executescript(SCHEMA)
        has_keys = db.execute("SELECT 1 FROM data_keys LIMIT 1").fetchone() is not None
        return cls(db, *master_key(home, env, has_keys))

    @classmethod
    def ephemeral(cls, db: sqlite3.Connection) -> KeyRing:
        """A ring whose master key lives only in this process (benchmarks, tests):
        what it seals cannot be read once it is gone."""
        return cls(db, secrets.token_bytes(KEY_BYTES), "ephemeral")

    # -- data keys -----------------------------------------------------------------
    def _unwrap_all(self) -> None:
        rows = self.db.execute(
            "SELECT id, state, wrapped FROM data_keys WHERE wrapped IS NOT NULL ORDER BY id"
        ).fetchall()
        for key_id, state, wrapped in rows:
            try:
                raw = self._master.decrypt(
                    bytes(wrapped[:NONCE]), bytes(wrapped[NONCE:]), _wrap_aad(key_id)
                )
            except InvalidTag:
                raise InvalidRequest(
                    f"the master key from {self.source} is not the one this database was"
                    f" encrypted with (data key {key_id} does not unwrap)",
                    param=ENV,
                ) from None
            self._keys[key_id] = AESGCM(raw)
            if state == "active":
                self.active = key_id

    def _new_key(self) -> int:
        raw = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
        with self.atomic():
            self.db.execute("UPDATE data_keys SET state = 'retiring' WHERE state = 'active'")
            key_id = int(
                self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM data_keys").fetchone()[0]
            )
            nonce = secrets.token_bytes(NONCE)
            wrapped = nonce + self._master.encrypt(nonce, raw, _wrap_aad(key_id))
            self.db.execute(
                "INSERT INTO data_keys (id, state, wrapped, created_at) VALUES (?, 'active', ?, ?)",
                (key_id, wrapped, time.time()),
            )
        self._keys[key_id] = AESGCM(raw)
        self.active = key_id
        return key_id

    # -- sealing -------------------------------------------------------------------
    def seal(self, column: Sealed, data: bytes, *row: object) -> bytes:
        header = MAGIC + struct.pack(">I", self.active)
        nonce = secrets.token_bytes(NONCE)
        body = self._keys[self.active].encrypt(nonce, data, header + column.identity(row))
        return header + nonce + body

    def open(self, column: Sealed, value: object, *row: object) -> bytes:
        where = f"{column.name} of row {list(row)}"
        if not isinstance(value, bytes) or len(value) < HEADER + NONCE + 16:
            raise _integrity(f"{where} is not sealed: the database was altered")
        if value[: len(MAGIC)] != MAGIC:
            raise _integrity(f"{where} has an unknown format: the database was altered")
        key_id = struct.unpack(">I", value[len(MAGIC) : HEADER])[0]
        key = self._keys.get(key_id)
        if key is None:
            raise _integrity(f"{where} names data key {key_id}, which is retired or unknown")
        try:
            return key.decrypt(
                value[HEADER : HEADER + NONCE],
                value[HEADER + NONCE :],
                value[:HEADER] + column.identity(row),
            )
        except InvalidTag:
            raise _integrity(
                f"{where} failed its integrity check: it was altered or moved from another row"
            ) from None

    def seal_text(self, column: Sealed, text: str, *row: object) -> bytes:
        return self.seal(column, text.encode("utf-8", "surrogatepass"), *row)

    def open_text(self, column: Sealed, value: object, *row: object) -> str:
        return self.open(column, value, *row).decode("utf-8", "surrogatepass")

    # -- columns -------------------------------------------------------------------
    def adopt(self, columns: Sequence[Sealed], rebuild: Callable[[], None]) -> None:
        """Take charge of `columns`. The first time (a new database, or one from before
        encryption), seal every value still in clear and call `rebuild` (the store's
        index, from the opened values), all in one transaction; vacuum afterwards if
        there was plaintext, so no freed page keeps it."""
        self.columns += [c for c in columns if c not in self.columns]
        done = {r[0] for r in self.db.execute("SELECT name FROM sealed_columns")}
        todo = [c for c in columns if c.name not in done]
        if not todo:
            return
        sealed = 0
        with self.atomic():
            for column in todo:
                sealed += self._seal_plaintext(column)
                self.db.execute(
                    "INSERT INTO sealed_columns (name, sealed_at) VALUES (?, ?)",
                    (column.name, time.time()),
                )
            rebuild()
        if sealed:
            log.info("encrypted %d values written before encryption at rest", sealed)
            self.scrub()

    def _seal_plaintext(self, column: Sealed) -> int:
        keys = ", ".join(column.keys)
        rows = self.db.execute(
            f"SELECT rowid, {keys}, {column.column} FROM {column.table}"
            f" WHERE {column.column} IS NOT NULL"
        ).fetchall()
        for row in rows:
            value = row[-1]
            data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
            self.db.execute(
                f"UPDATE {column.table} SET {column.column} = ? WHERE rowid = ?",
                (self.seal(column, bytes(data), *row[1:-1]), row[0]),
            )
        return len(rows)

    def scrub(self) -> None:
        """Rewrite the database file and empty the WAL: no free page or old frame keeps
        a value that was once written in clear (or under a retired key)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- rotation ------------------------------------------------------------------
    def rotate(self) -> dict[str, Any]:
        """A new active data key, at once; `sweep()` moves the rows over to it."""
        self._new_key()
        self.error = None
        return self.status()

    @property
    def pending(self) -> bool:
        """Keys still to retire: a sweep has work (or was cut short)."""
        return len(self._keys) > 1

    def start_sweep(self, pause: float = 0.0) -> asyncio.Task[None] | None:
        """The sweep as a task on the running loop, unless one runs or none is due."""
        if self.sweeping or not self.pending:
            return None
        from llmos.kernel.keysweep import sweep

        self.sweeping = True  # from now: status says so before the task first runs
        return asyncio.get_running_loop().create_task(sweep(self, pause), name="llmos-key-sweep")

    async def sweep(self, pause: float = 0.0) -> None:
        """Run a sweep to its end (or return at once if one runs already)."""
        task = self.start_sweep(pause)
        if task is not None:
            await task

    def rows_left(self) -> int:
        from llmos.kernel.keysweep import rows_left

        return rows_left(self)

    def retire(self) -> None:
        """Erase every non-active key's wrapped bytes (overwritten on disk, not just
        unlinked), and forget it."""
        old = [k for k in self._keys if k != self.active]
        secure = self.db.execute("PRAGMA secure_delete").fetchone()[0]
        self.db.execute("PRAGMA secure_delete = ON")
        try:
            with self.atomic():
                for key_id in old:
                    self.db.execute(
                        "UPDATE data_keys SET state = 'retired', wrapped = NULL, retired_at = ?"
                        " WHERE id = ?",
                        (time.time(), key_id),
                    )
        finally:
            self.db.execute(f"PRAGMA secure_delete = {int(secure)}")
        for key_id in old:
            del self._keys[key_id]
        log.info("retired data keys %s", old)

    def status(self) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT id, state, created_at, retired_at FROM data_keys ORDER BY id"
        ).fetchall()
        return {
            "algorithm": "AES-256-GCM",
            "master_key": self.source,
            "active_key": self.active,
            "keys": [
                {"id": r[0], "state": r[1], "created_at": r[2], "retired_at": r[3]} for r in rows
            ],
            "rows_left": self.rows_left(),
            "running": self.sweeping,
            "resealed": self.resealed,
            "error": self.error,
            "sealed": [c.name for c in self.columns],
        }

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One SAVEPOINT (nests inside a store's own)."""
        self.db.execute("SAVEPOINT keyring")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO keyring")
            self.db.execute("RELEASE keyring")
            raise
        self.db.execute("RELEASE keyring")


def _wrap_aad(key_id: int) -> bytes:
    return f"llmos data key {key_id}".encode()


def _integrity(message: str) -> Unavailable:
    return Unavailable(f"stored data: {message}", code="data_integrity")
