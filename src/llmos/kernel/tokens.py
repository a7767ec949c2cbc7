"""Bearer tokens: random secrets, stored only as salted SHA-256 hashes.

Format `llmos-<id>-<secret>`: the id finds the row, the secret is checked against
its hash in constant time. An admin token given in LLMOS_TOKEN may have any form;
it is stored (hashed) under the fixed id `admin-env`. A token may expire; a user
token takes its owner's current role and groups, so a role change or a removed
user takes effect at once. A process token carries the capability fixed at spawn."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.errors import NotFound, Unauthorized
from llmos.kernel.capability import Capability
from llmos.kernel.store import Store
from llmos.kernel.users import Users

ENV_ADMIN_ID = "admin-env"
ROLES = ("admin", "user", "viewer", "process")


@dataclass(frozen=True)
class Caller:
    """Who is making a syscall, as established by their token."""

    token_id: str
    owner: str
    role: str
    pid: int | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    caps: Capability | None = None  # a process token's rights

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def principals(self) -> frozenset[str]:
        """The names shares may grant to: the user and each of their groups."""
        return frozenset({f"user:{self.owner}", *(f"group:{g}" for g in self.groups)})


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode()).hexdigest()


class TokenStore:
    def __init__(self, store: Store, users: Users) -> None:
        self.store = store
        self.users = users

    def issue(
        self,
        owner: str,
        role: str,
        pid: int | None = None,
        *,
        name: str | None = None,
        expires_at: float | None = None,
        caps: Capability | None = None,
    ) -> tuple[str, Caller]:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        self._save(token_id, secret, owner, role, pid, name, expires_at, caps)
        return f"llmos-{token_id}-{secret}", Caller(token_id, owner, role, pid, caps=caps)

    def ensure_admin(self, env_token: str | None, path: Path) -> str | None:
        """LLMOS_TOKEN wins; else generate one on first start, kept hashed in the
        database and in clear only in `path` (LLMOS_HOME/admin-token, mode 0600).
        Returns the token when it was generated now (to show it once)."""
        self.users.ensure("admin", "admin")
        if env_token:
            self.install_env_admin(env_token)
            return None
        if self.has_admin():
            return None
        token, _ = self.issue("admin", "admin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(path, 0o600)
        return token

    def install_env_admin(self, token: str) -> None:
        self._save(ENV_ADMIN_ID, token, "admin", "admin", None, "LLMOS_TOKEN", None, None)

    def has_admin(self) -> bool:
        return self.store.count_tokens("admin") > 0

    def _save(
        self,
        token_id: str,
        secret: str,
        owner: str,
        role: str,
        pid: int | None,
        name: str | None,
        expires_at: float | None,
        caps: Capability | None,
    ) -> None:
        salt = secrets.token_hex(16)
        self.store.add_token(
            {
                "id": token_id,
                "salt": salt,
                "hash": _digest(salt, secret),
                "owner": owner,
                "role": role,
                "pid": pid,
                "implicit_pid": None,
                "created_at": time.time(),
                "revoked": 0,
                "name": name,
                "expires_at": expires_at,
                "caps": None if caps is None else caps.to_json(),
            }
        )

    def verify(self, token: str | None) -> Caller:
        if not token:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        parts = token.split("-", 2)
        candidates = [(ENV_ADMIN_ID, token)]
        if len(parts) == 3 and parts[0] == "llmos":
            candidates.insert(0, (parts[1], parts[2]))
        for token_id, secret in candidates:
            row = self.store.get_token(token_id)
            if row is None or not hmac.compare_digest(row["hash"], _digest(row["salt"], secret)):
                continue
            if row["expires_at"] is not None and time.time() >= row["expires_at"]:
                raise Unauthorized(f"token {token_id} has expired")
            caps = None if row["caps"] is None else Capability.from_json(row["caps"])
            if caps is not None and caps.expired():
                raise Unauthorized(f"the capability of token {token_id} has expired")
            role = row["role"]
            if role != "process" and token_id != ENV_ADMIN_ID:
                role = self.users.role_of(row["owner"]) or role
            groups = self.users.groups_of(row["owner"])
            return Caller(token_id, row["owner"], role, row["pid"], groups, caps)
        raise Unauthorized("invalid bearer token")

    # -- management ----------------------------------------------------------------
    def listing(self, owner: str | None) -> list[dict[str, Any]]:
        """Tokens (never their secrets or hashes), of one owner or all."""
        return [_public(r) for r in self.store.list_tokens(owner)]

    def get(self, token_id: str) -> dict[str, Any]:
        row = self.store.get_token(token_id)
        if row is None:
            raise NotFound(f"no token with id {token_id!r}", param="id")
        return _public(row)

    def revoke(self, token_id: str) -> dict[str, Any]:
        info = self.get(token_id)
        self.store.revoke_tokens(token_id=token_id)
        return {**info, "revoked": True}

    def revoke_owner(self, owner: str) -> None:
        self.store.revoke_tokens(owner=owner)

    def revoke_process(self, pid: int) -> None:
        self.store.revoke_tokens(pid=pid)

    def set_implicit_pid(self, token_id: str, pid: int) -> None:
        self.store.set_implicit_pid(token_id, pid)

    def implicit_pid(self, token_id: str) -> int | None:
        row = self.store.get_token(token_id)
        return None if row is None or row["implicit_pid"] is None else int(row["implicit_pid"])


def _public(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "owner": row["owner"],
        "role": row["role"],
        "pid": row["pid"],
        "name": row["name"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "revoked": bool(row["revoked"]),
    }
