"""Users and groups. A user has one role — `admin`, `user` or read-only `viewer` —
and belongs to any number of groups, which shares can name (`group:eng`)."""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any

from llmos.errors import InvalidRequest, NotFound

USER_ROLES = ("admin", "user", "viewer")
NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS user_groups (
    user TEXT NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (user, grp)
);
"""


def check_name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidRequest(
            f"{param} must be 1-63 characters: lowercase letters, digits, '_', '.', '-',"
            " starting with a letter",
            param=param,
        )
    return value


class Users:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def ensure(self, name: str, role: str) -> None:
        """Create a user if missing (the bootstrap admin)."""
        self.db.execute(
            "INSERT OR IGNORE INTO users (name, role, created_at) VALUES (?, ?, ?)",
            (name, role, time.time()),
        )

    def add(self, name: Any, role: Any, groups: Any = None) -> dict[str, Any]:
        name = check_name(name, "name")
        if role not in USER_ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(USER_ROLES)}", param="role")
        group_list = self._groups(groups)
        if self.find(name) is not None:
            raise InvalidRequest(f"user {name!r} already exists", param="name")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT INTO users (name, role, created_at) VALUES (?, ?, ?)",
                (name, role, time.time()),
            )
            self.db.executemany(
                "INSERT INTO user_groups (user, grp) VALUES (?, ?)", [(name, g) for g in group_list]
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.get(name)

    def update(self, name: str, role: Any = None, groups: Any = None) -> dict[str, Any]:
        self.get(name)
        if role is not None:
            if role not in USER_ROLES:
                raise InvalidRequest(f"role must be one of {', '.join(USER_ROLES)}", param="role")
            self.db.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
        if groups is not None:
            group_list = self._groups(groups)
            self.db.execute("DELETE FROM user_groups WHERE user = ?", (name,))
            self.db.executemany(
                "INSERT INTO user_groups (user, grp) VALUES (?, ?)", [(name, g) for g in group_list]
            )
        return self.get(name)

    def remove(self, name: str) -> dict[str, Any]:
        user = self.get(name)
        self.db.execute("DELETE FROM users WHERE name = ?", (name,))
        self.db.execute("DELETE FROM user_groups WHERE user = ?", (name,))
        return user

    def find(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "groups": sorted(self.groups_of(name))}

    def get(self, name: str) -> dict[str, Any]:
        user = self.find(name)
        if user is None:
            raise NotFound(f"no user named {name!r}", param="name")
        return user

    def listing(self) -> list[dict[str, Any]]:
        names = [r["name"] for r in self.db.execute("SELECT name FROM users ORDER BY name")]
        return [self.get(n) for n in names]

    def role_of(self, name: str) -> str | None:
        row = self.db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row["role"])

    def groups_of(self, name: str) -> frozenset[str]:
        rows = self.db.execute("SELECT grp FROM user_groups WHERE user = ?", (name,))
        return frozenset(r["grp"] for r in rows)

    @staticmethod
    def _groups(groups: Any) -> list[str]:
        if groups is None:
            return []
        if not isinstance(groups, list) or len(groups) > 64:
            raise InvalidRequest("groups must be a list of group names", param="groups")
        return sorted({check_name(g, "groups") for g in groups})
