"""Access-control lists: an owner shares a process, a file path prefix or memories
with a user (`user:bob`) or a group (`group:eng`), to read or to write (write
includes read). Owners and admins need no share. A share never crosses into a
process token: a process acts within its own capability only."""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any

from llmos.errors import InvalidRequest, NotFound
from llmos.kernel.capability import _under
from llmos.params import MAX_INT

KINDS = ("process", "file", "memory")
PERMS = ("read", "write")
PRINCIPAL = re.compile(r"^(user|group):[a-z][a-z0-9_.-]{0,62}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    resource TEXT NOT NULL,
    principal TEXT NOT NULL,
    perm TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (kind, owner, resource, principal)
);
CREATE INDEX IF NOT EXISTS shares_lookup ON shares(kind, owner);
"""


class Shares:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def grant(
        self, kind: Any, owner: str, resource: str, principal: Any, perm: Any
    ) -> dict[str, Any]:
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}", param="kind")
        if not isinstance(principal, str) or not PRINCIPAL.match(principal):
            raise InvalidRequest(
                "principal must be 'user:<name>' or 'group:<name>'", param="principal"
            )
        if perm not in PERMS:
            raise InvalidRequest("perm must be 'read' or 'write'", param="perm")
        if principal == f"user:{owner}":
            raise InvalidRequest("an owner needs no share with themselves", param="principal")
        self.db.execute(
            "INSERT INTO shares (kind, owner, resource, principal, perm, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, owner, resource, principal)"
            " DO UPDATE SET perm = excluded.perm",
            (kind, owner, resource, principal, perm, time.time()),
        )
        row = self.db.execute(
            "SELECT * FROM shares WHERE kind = ? AND owner = ? AND resource = ? AND principal = ?",
            (kind, owner, resource, principal),
        ).fetchone()
        return dict(row)

    def revoke(self, share_id: int, owner: str | None) -> dict[str, Any]:
        """Remove a share; `owner` None (admin) may remove anyone's."""
        share = self.get(share_id)
        if owner is not None and share["owner"] != owner:
            raise NotFound(f"no share with id {share_id}", param="id")
        self.db.execute("DELETE FROM shares WHERE id = ?", (share_id,))
        return share

    def get(self, share_id: int) -> dict[str, Any]:
        if not 0 <= share_id <= MAX_INT:  # SQLite cannot even look it up
            raise NotFound(f"no share with id {share_id}", param="id")
        row = self.db.execute("SELECT * FROM shares WHERE id = ?", (share_id,)).fetchone()
        if row is None:
            raise NotFound(f"no share with id {share_id}", param="id")
        return dict(row)

    def listing(
        self, owner: str | None, principals: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """Shares an owner made, and shares made to any of `principals`."""
        if owner is None:
            rows = self.db.execute("SELECT * FROM shares ORDER BY id").fetchall()
        else:
            marks = ", ".join("?" for _ in principals) or "''"
            rows = self.db.execute(
                f"SELECT * FROM shares WHERE owner = ? OR principal IN ({marks}) ORDER BY id",
                (owner, *sorted(principals)),
            ).fetchall()
        return [dict(r) for r in rows]

    def drop(self, kind: str, owner: str, resource: str) -> None:
        """Forget the shares of a resource that is gone."""
        self.db.execute(
            "DELETE FROM shares WHERE kind = ? AND owner = ? AND resource = ?",
            (kind, owner, resource),
        )

    def granted(
        self, principals: frozenset[str], kind: str, owner: str, resource: str, write: bool
    ) -> str | None:
        """The best permission `principals` hold on the resource: 'write', 'read' or
        None. Files match by path prefix; memories by id or '*' (all of them)."""
        if not principals:
            return None
        marks = ", ".join("?" for _ in principals)
        rows = self.db.execute(
            f"SELECT resource, perm FROM shares WHERE kind = ? AND owner = ?"
            f" AND principal IN ({marks})",
            (kind, owner, *sorted(principals)),
        ).fetchall()
        best: str | None = None
        for r in rows:
            if not _matches(kind, r["resource"], resource):
                continue
            if r["perm"] == "write":
                return "write"
            best = "read"
        return best

    def owners_sharing(self, principals: frozenset[str], kind: str) -> list[str]:
        """Owners who shared something of `kind` with any of `principals`."""
        if not principals:
            return []
        marks = ", ".join("?" for _ in principals)
        rows = self.db.execute(
            f"SELECT DISTINCT owner FROM shares WHERE kind = ? AND principal IN ({marks})",
            (kind, *sorted(principals)),
        )
        return sorted(r["owner"] for r in rows)


def _matches(kind: str, shared: str, resource: str) -> bool:
    if kind == "file":
        return _under(resource, shared)
    if kind == "memory":
        return shared in ("*", resource)
    return shared == resource
