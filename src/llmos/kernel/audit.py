"""The audit log: every privileged syscall and every denial, appended to a table
whose rows are hash-chained. Each row's MAC covers its fields and the previous
row's MAC, keyed by a secret kept outside the database (LLMOS_HOME/audit-key,
mode 0600), so whoever can edit the database cannot recompute the chain. The head
(last seq and MAC) is also written beside the key, so cutting rows off the end is
caught too. `verify` walks the chain and names the first row that does not hold."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    token_id TEXT NOT NULL,
    pid INTEGER,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    prev TEXT NOT NULL,
    mac TEXT NOT NULL
);
"""
FIELDS = ("seq", "ts", "actor", "role", "token_id", "pid", "action", "target", "outcome", "reason")
GENESIS = "0" * 64


def _secret_file(path: Path, make: bytes) -> bytes:
    """Read a 0600 secret file, creating it with `make` if missing."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(make)
    return path.read_bytes()


class AuditLog:
    def __init__(self, db: sqlite3.Connection, home: Path) -> None:
        self.db = db
        db.executescript(SCHEMA)
        self.key = bytes.fromhex(
            _secret_file(home / "audit-key", secrets.token_hex(32).encode()).decode().strip()
        )
        self.head_path = home / "audit-head"

    def _mac(self, row: dict[str, Any], prev: str) -> str:
        body = json.dumps([row[f] for f in FIELDS], separators=(",", ":"), ensure_ascii=True)
        return hmac.new(self.key, (prev + body).encode(), hashlib.sha256).hexdigest()

    def append(
        self,
        actor: str,
        role: str,
        token_id: str,
        pid: int | None,
        action: str,
        target: dict[str, Any],
        outcome: str,
        reason: str = "",
    ) -> int:
        last = self.db.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, GENESIS) if last is None else (last["seq"] + 1, last["mac"])
        row = {
            "seq": seq,
            "ts": round(time.time(), 6),
            "actor": actor,
            "role": role,
            "token_id": token_id,
            "pid": pid,
            "action": action,
            "target": json.dumps(target, sort_keys=True, default=str)[:1000],
            "outcome": outcome,
            "reason": reason[:500],
        }
        mac = self._mac(row, prev)
        self.db.execute(
            f"INSERT INTO audit ({', '.join(FIELDS)}, prev, mac)"
            f" VALUES ({', '.join('?' for _ in FIELDS)}, ?, ?)",
            (*(row[f] for f in FIELDS), prev, mac),
        )
        tmp = self.head_path.with_suffix(".tmp")
        tmp.write_text(f"{seq} {mac}\n")
        os.replace(tmp, self.head_path)
        return seq

    def listing(
        self,
        limit: int = 100,
        before: int | None = None,
        actor: str | None = None,
        outcome: str | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if actor is not None:
            where.append("actor = ?")
            args.append(actor)
        if outcome is not None:
            where.append("outcome = ?")
            args.append(outcome)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [{**dict(r), "target": json.loads(r["target"])} for r in rows]

    def verify(self) -> dict[str, Any]:
        """Walk the chain. The first row that fails, and why; or ok with the count."""
        prev, expected_seq, count = GENESIS, 1, 0
        for r in self.db.execute("SELECT * FROM audit ORDER BY seq"):
            row = dict(r)
            if row["seq"] != expected_seq:
                return _broken(expected_seq, f"row {expected_seq} is missing (deleted)", count)
            if row["prev"] != prev:
                return _broken(row["seq"], "its link to the previous row does not match", count)
            if not hmac.compare_digest(row["mac"], self._mac(row, prev)):
                return _broken(row["seq"], "its contents do not match its MAC (edited)", count)
            prev, expected_seq, count = row["mac"], expected_seq + 1, count + 1
        head = self.head_path.read_text().split() if self.head_path.exists() else ["0", GENESIS]
        if int(head[0]) != count or head[1] != prev:
            return _broken(
                count + 1,
                f"the log ends at row {count} but its head says row {head[0]} (rows cut off)",
                count,
            )
        return {"ok": True, "rows": count, "head": prev}


def _broken(seq: int, reason: str, good: int) -> dict[str, Any]:
    return {"ok": False, "rows": good, "bad_row": seq, "reason": f"row {seq}: {reason}"}
