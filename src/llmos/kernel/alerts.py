"""The alert log: one SQLite row per anomaly the detector raised (anomaly.py).

An alert is active until it is cleared (`cleared_at` set): by an admin
(alert.clear), by the end of its process, or — for one that did not throttle — by
its rule staying quiet. The active ones are also kept in memory, for `top` and the
metrics, which read them every few seconds."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from llmos.kernel.detector import KINDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    pid INTEGER NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    action TEXT NOT NULL,
    cleared_at REAL
);
CREATE INDEX IF NOT EXISTS alerts_active ON alerts(cleared_at, pid);
"""
ACTIONS = ("alert", "throttle")


@dataclass
class Alert:
    id: int
    at: float  # wall clock
    pid: int
    owner: str
    kind: str  # one of detector.KINDS
    message: str  # with the figures
    value: float
    threshold: float
    action: str  # one of ACTIONS: what was done to the process
    cleared_at: float | None = None

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "owner": self.owner,
            "kind": self.kind,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "action": self.action,
            "created_at": self.at,
            "cleared_at": self.cleared_at,
        }

    @classmethod
    def of_row(cls, r: sqlite3.Row) -> Alert:
        return cls(
            r["id"],
            r["at"],
            r["pid"],
            r["owner"],
            r["kind"],
            r["message"],
            r["value"],
            r["threshold"],
            r["action"],
            r["cleared_at"],
        )


class AlertLog:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        rows = db.execute("SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY id")
        self.active: dict[int, Alert] = {r["id"]: Alert.of_row(r) for r in rows.fetchall()}

    def add(
        self,
        pid: int,
        owner: str,
        kind: str,
        message: str,
        value: float,
        threshold: float,
        action: str,
    ) -> Alert:
        assert kind in KINDS and action in ACTIONS
        at = time.time()
        cur = self.db.execute(
            "INSERT INTO alerts (at, pid, owner, kind, message, value, threshold, action)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (at, pid, owner, kind, message, value, threshold, action),
        )
        assert cur.lastrowid is not None
        alert = Alert(cur.lastrowid, at, pid, owner, kind, message, value, threshold, action)
        self.active[alert.id] = alert
        return alert

    def get(self, alert_id: int) -> Alert | None:
        if alert_id in self.active:
            return self.active[alert_id]
        row = self.db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else Alert.of_row(row)

    def clear(self, alert: Alert) -> Alert:
        if alert.active:
            alert.cleared_at = time.time()
            self.db.execute(
                "UPDATE alerts SET cleared_at = ? WHERE id = ?", (alert.cleared_at, alert.id)
            )
            self.active.pop(alert.id, None)
        return alert

    def of(self, pid: int) -> list[Alert]:
        """`pid`'s active alerts."""
        return [a for a in self.active.values() if a.pid == pid]

    def find(self, pid: int, kind: str) -> Alert | None:
        return next((a for a in self.of(pid) if a.kind == kind), None)

    def listing(self, active_only: bool, limit: int) -> list[Alert]:
        """Newest first."""
        where = " WHERE cleared_at IS NULL" if active_only else ""
        rows = self.db.execute(f"SELECT * FROM alerts{where} ORDER BY id DESC LIMIT ?", (limit,))
        return [self.active.get(r["id"]) or Alert.of_row(r) for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        """Active alerts by kind, every kind present."""
        seen = Counter(a.kind for a in self.active.values())
        return {kind: seen[kind] for kind in KINDS}
