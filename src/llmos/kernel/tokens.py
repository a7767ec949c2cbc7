"""Bearer tokens: random secrets, stored only as salted SHA-256 hashes.

Format `llmos-<id>-<secret>`: the id finds the row, the secret is checked against
its hash in constant time. An admin token given in LLMOS_TOKEN may have any form;
it is stored (hashed) under the fixed id `admin-env`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from llmos.errors import Unauthorized
from llmos.kernel.store import Store

ENV_ADMIN_ID = "admin-env"
ROLES = ("admin", "user", "process")


@dataclass(frozen=True)
class Caller:
    """Who is making a syscall, as established by their token."""

    token_id: str
    owner: str
    role: str
    pid: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode()).hexdigest()


class TokenStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def issue(self, owner: str, role: str, pid: int | None = None) -> tuple[str, Caller]:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        self._save(token_id, secret, owner, role, pid)
        return f"llmos-{token_id}-{secret}", Caller(token_id, owner, role, pid)

    def install_env_admin(self, token: str) -> None:
        self._save(ENV_ADMIN_ID, token, "admin", "admin", None)

    def has_admin(self) -> bool:
        return self.store.count_tokens("admin") > 0

    def _save(self, token_id: str, secret: str, owner: str, role: str, pid: int | None) -> None:
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
            if row is not None and hmac.compare_digest(row["hash"], _digest(row["salt"], secret)):
                return Caller(token_id, row["owner"], row["role"], row["pid"])
        raise Unauthorized("invalid bearer token")

    def set_implicit_pid(self, token_id: str, pid: int) -> None:
        self.store.set_implicit_pid(token_id, pid)

    def implicit_pid(self, token_id: str) -> int | None:
        row = self.store.get_token(token_id)
        return None if row is None or row["implicit_pid"] is None else int(row["implicit_pid"])
