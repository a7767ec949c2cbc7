"""Users, tokens, shares, the audit log and any syscall by name from Python (mixins of Client and
AsyncClient; every method is one route of api/routes_access.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from llmos.sdk import _wire


def _drop_none(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


class AccessMixin:
    """Sync: needs `self._request(method, path, body=None, **kwargs)`."""

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        raise NotImplementedError

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/auth/whoami")
        return result

    def syscalls(self) -> list[dict[str, Any]]:
        """The syscall table: name, doc, and whether this token may make each."""
        return _wire.data_of(self._request("GET", "/v1/syscalls"))

    def syscall(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Any syscall by name (an LLM call runs to its end: {text, finish_reason, usage})."""
        return self._request("POST", f"/v1/syscalls/{quote(name)}", args or {})["result"]

    def users(self) -> list[dict[str, Any]]:
        return _wire.data_of(self._request("GET", "/v1/users"))

    def add_user(
        self, name: str, role: str = "user", groups: list[str] | None = None
    ) -> dict[str, Any]:
        """The new user, with a first token (`token`) shown only now."""
        body = {"name": name, "role": role, "groups": groups or []}
        result: dict[str, Any] = self._request("POST", "/v1/users", body)
        return result

    def update_user(
        self, name: str, role: str | None = None, groups: list[str] | None = None
    ) -> dict[str, Any]:
        body = _drop_none(role=role, groups=groups)
        result: dict[str, Any] = self._request("PATCH", f"/v1/users/{quote(name)}", body)
        return result

    def remove_user(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("DELETE", f"/v1/users/{quote(name)}")
        return result

    def tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        params = {} if user is None else {"user": user}
        return _wire.data_of(self._request("GET", "/v1/tokens", params=params))

    def create_token(
        self, user: str | None = None, name: str | None = None, expires_in: float | None = None
    ) -> dict[str, Any]:
        body = _drop_none(user=user, name=name, expires_in=expires_in)
        result: dict[str, Any] = self._request("POST", "/v1/tokens", body)
        return result

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("DELETE", f"/v1/tokens/{quote(token_id)}")
        return result

    def shares(self) -> list[dict[str, Any]]:
        return _wire.data_of(self._request("GET", "/v1/shares"))

    def share(
        self, kind: str, resource: str | int, principal: str, perm: str = "read"
    ) -> dict[str, Any]:
        body = {"kind": kind, "resource": resource, "principal": principal, "perm": perm}
        result: dict[str, Any] = self._request("POST", "/v1/shares", body)
        return result

    def unshare(self, share_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("DELETE", f"/v1/shares/{share_id}")
        return result

    def audit(
        self,
        limit: int = 100,
        before: int | None = None,
        actor: str | None = None,
        outcome: str | None = None,
    ) -> list[dict[str, Any]]:
        params = _drop_none(limit=limit, before=before, actor=actor, outcome=outcome)
        return _wire.data_of(self._request("GET", "/v1/audit", params=params))

    def audit_verify(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/audit/verify")
        return result


class AsyncAccessMixin:
    """Async twin of AccessMixin."""

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        raise NotImplementedError

    async def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/v1/auth/whoami")
        return result

    async def syscalls(self) -> list[dict[str, Any]]:
        """The syscall table: name, doc, and whether this token may make each."""
        return _wire.data_of(await self._request("GET", "/v1/syscalls"))

    async def syscall(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Any syscall by name (an LLM call runs to its end: {text, finish_reason, usage})."""
        return (await self._request("POST", f"/v1/syscalls/{quote(name)}", args or {}))["result"]

    async def users(self) -> list[dict[str, Any]]:
        return _wire.data_of(await self._request("GET", "/v1/users"))

    async def add_user(
        self, name: str, role: str = "user", groups: list[str] | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "role": role, "groups": groups or []}
        result: dict[str, Any] = await self._request("POST", "/v1/users", body)
        return result

    async def remove_user(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("DELETE", f"/v1/users/{quote(name)}")
        return result

    async def create_token(
        self, user: str | None = None, name: str | None = None, expires_in: float | None = None
    ) -> dict[str, Any]:
        body = _drop_none(user=user, name=name, expires_in=expires_in)
        result: dict[str, Any] = await self._request("POST", "/v1/tokens", body)
        return result

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("DELETE", f"/v1/tokens/{quote(token_id)}")
        return result

    async def share(
        self, kind: str, resource: str | int, principal: str, perm: str = "read"
    ) -> dict[str, Any]:
        body = {"kind": kind, "resource": resource, "principal": principal, "perm": perm}
        result: dict[str, Any] = await self._request("POST", "/v1/shares", body)
        return result

    async def audit_verify(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/v1/audit/verify")
        return result
