"""SQLite (WAL) under LLMOS_HOME: processes, hashed tokens, one telemetry row per
finished request. One connection, used from the kernel's event loop thread only."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from llmos.kernel.process import Process, ProcState

SCHEMA = """
CREATE TABLE IF NOT EXISTS processes (
    pid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    implicit INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    preemptions INTEGER NOT NULL DEFAULT 0,
    max_concurrent INTEGER,
    token_budget INTEGER,
    memory_shared INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    pid INTEGER,
    implicit_pid INTEGER,
    created_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    model TEXT NOT NULL,
    device TEXT,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    max_tokens INTEGER NOT NULL,
    queue_wait_s REAL,
    ttft_s REAL,
    total_s REAL NOT NULL,
    finish_reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    preemptions INTEGER NOT NULL DEFAULT 0,
    session TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS telemetry_owner ON telemetry(owner, created_at);
"""

TELEMETRY_COLUMNS = (
    "request_id",
    "owner",
    "pid",
    "model",
    "device",
    "kind",
    "priority",
    "prompt_tokens",
    "output_tokens",
    "cached_tokens",
    "max_tokens",
    "queue_wait_s",
    "ttft_s",
    "total_s",
    "finish_reason",
    "created_at",
    "preemptions",
    "session",
    "app",
    "itl_s",
)

# Telemetry columns a row may leave out (added after the first release).
OPTIONAL: dict[str, Any] = {"preemptions": 0, "session": "", "app": "", "itl_s": None}

# Columns added after the first release: (table, column, declaration).
MIGRATIONS = (
    ("processes", "preemptions", "INTEGER NOT NULL DEFAULT 0"),
    ("processes", "max_concurrent", "INTEGER"),
    ("processes", "token_budget", "INTEGER"),
    ("processes", "memory_shared", "INTEGER NOT NULL DEFAULT 0"),
    ("telemetry", "preemptions", "INTEGER NOT NULL DEFAULT 0"),
    ("telemetry", "session", "TEXT NOT NULL DEFAULT ''"),
    ("telemetry", "app", "TEXT NOT NULL DEFAULT ''"),
    ("telemetry", "itl_s", "REAL"),
    ("tokens", "name", "TEXT"),
    ("tokens", "expires_at", "REAL"),
    ("tokens", "caps", "TEXT"),
    ("processes", "command", "TEXT"),
    ("processes", "os_pid", "INTEGER"),
    ("processes", "exit_code", "INTEGER"),
    ("processes", "cpu_s", "REAL"),
    ("processes", "wall_s", "REAL"),
)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        for table, column, decl in MIGRATIONS:
            have = {r["name"] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def close(self) -> None:
        self.db.close()

    # -- processes -----------------------------------------------------------------
    def save_process(self, p: Process) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO processes (pid, name, owner, priority, state, implicit,"
            " created_at, finished_at, tokens_in, tokens_out, requests, preemptions,"
            " max_concurrent, token_budget, memory_shared,"
            " command, os_pid, exit_code, cpu_s, wall_s)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                p.pid,
                p.name,
                p.owner,
                p.priority,
                p.state.name,
                int(p.implicit),
                p.created_at,
                p.finished_at,
                p.tokens_in,
                p.tokens_out,
                p.requests,
                p.preemptions,
                p.max_concurrent,
                p.token_budget,
                int(p.memory_shared),
                p.command,
                p.os_pid,
                p.exit_code,
                p.cpu_s,
                p.wall_s,
            ),
        )

    def load_processes(self) -> list[Process]:
        out = []
        for r in self.db.execute("SELECT * FROM processes ORDER BY pid"):
            state = ProcState[r["state"]]
            out.append(
                Process(
                    pid=r["pid"],
                    name=r["name"],
                    owner=r["owner"],
                    priority=r["priority"],
                    # Nothing runs across a restart: the living come back READY.
                    state=state if not state.alive else ProcState.READY,
                    created_at=r["created_at"],
                    finished_at=r["finished_at"],
                    tokens_in=r["tokens_in"],
                    tokens_out=r["tokens_out"],
                    requests=r["requests"],
                    implicit=bool(r["implicit"]),
                    preemptions=r["preemptions"],
                    max_concurrent=r["max_concurrent"],
                    token_budget=r["token_budget"],
                    memory_shared=bool(r["memory_shared"]),
                    command=r["command"],
                    os_pid=r["os_pid"],
                    exit_code=r["exit_code"],
                    cpu_s=r["cpu_s"],
                    wall_s=r["wall_s"],
                )
            )
        return out

    # -- tokens --------------------------------------------------------------------
    def add_token(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.db.execute(
            f"INSERT OR REPLACE INTO tokens ({cols}) VALUES ({marks})", tuple(row.values())
        )

    def get_token(self, token_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM tokens WHERE id = ? AND revoked = 0", (token_id,)
        ).fetchone()
        return row

    def list_tokens(self, owner: str | None) -> list[sqlite3.Row]:
        if owner is None:
            return self.db.execute("SELECT * FROM tokens ORDER BY created_at").fetchall()
        return self.db.execute(
            "SELECT * FROM tokens WHERE owner = ? ORDER BY created_at", (owner,)
        ).fetchall()

    def revoke_tokens(
        self, token_id: str | None = None, owner: str | None = None, pid: int | None = None
    ) -> None:
        if token_id is not None:
            self.db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (token_id,))
        if owner is not None:
            self.db.execute("UPDATE tokens SET revoked = 1 WHERE owner = ?", (owner,))
        if pid is not None:
            self.db.execute("UPDATE tokens SET revoked = 1 WHERE pid = ?", (pid,))

    def set_implicit_pid(self, token_id: str, pid: int) -> None:
        self.db.execute("UPDATE tokens SET implicit_pid = ? WHERE id = ?", (pid, token_id))

    def count_tokens(self, role: str) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM tokens WHERE role = ? AND revoked = 0", (role,)
        ).fetchone()
        return int(row[0])

    # -- telemetry -----------------------------------------------------------------
    def add_telemetry(self, row: dict[str, Any]) -> None:
        values = tuple(row[c] if c in row else OPTIONAL[c] for c in TELEMETRY_COLUMNS)
        marks = ", ".join("?" for _ in TELEMETRY_COLUMNS)
        self.db.execute(
            f"INSERT INTO telemetry ({', '.join(TELEMETRY_COLUMNS)}) VALUES ({marks})", values
        )

    def telemetry_since(self, limit: int = 5000) -> list[dict[str, Any]]:
        """The newest `limit` rows, oldest first (for replaying into a model)."""
        rows = self.telemetry(limit)
        rows.reverse()
        return rows

    def telemetry(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM telemetry ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [dict(r) for r in rows]
