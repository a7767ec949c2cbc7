"""MCP servers from the SDK: mixins for `Client` and `AsyncClient`.

`add_mcp(name, command, args, env)` attaches a stdio MCP server (admins only) and
returns once it runs, with its tools (named `mcp.<name>.<tool>`, called like any
tool); `mcp_servers()` lists what is attached and each server's state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from llmos.sdk._wire import data_of

MCP_PATH: Final = "/v1/mcp"


def mcp_url(name: str) -> str:
    return f"{MCP_PATH}/{quote(str(name), safe='')}"


def attach_body(
    name: str, command: str, args: Sequence[str], env: Mapping[str, str] | None
) -> dict[str, Any]:
    return {"name": name, "command": command, "args": list(args), "env": dict(env or {})}


class McpMixin:
    """Client's MCP server methods."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def mcp_servers(self) -> list[dict[str, Any]]:
        return data_of(self._request("GET", MCP_PATH))

    def add_mcp(
        self,
        name: str,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Attach a stdio MCP server; returns once it runs (its `tools` listed)."""
        server: dict[str, Any] = self._request(
            "POST", MCP_PATH, attach_body(name, command, args, env)
        )
        return server

    def restart_mcp(self, name: str) -> dict[str, Any]:
        server: dict[str, Any] = self._request("POST", mcp_url(name) + "/restart")
        return server

    def remove_mcp(self, name: str) -> dict[str, Any]:
        server: dict[str, Any] = self._request("DELETE", mcp_url(name))
        return server


class AsyncMcpMixin:
    """AsyncClient's MCP server methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def mcp_servers(self) -> list[dict[str, Any]]:
        return data_of(await self._request("GET", MCP_PATH))

    async def add_mcp(
        self,
        name: str,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Attach a stdio MCP server; returns once it runs (its `tools` listed)."""
        server: dict[str, Any] = await self._request(
            "POST", MCP_PATH, attach_body(name, command, args, env)
        )
        return server

    async def restart_mcp(self, name: str) -> dict[str, Any]:
        server: dict[str, Any] = await self._request("POST", mcp_url(name) + "/restart")
        return server

    async def remove_mcp(self, name: str) -> dict[str, Any]:
        server: dict[str, Any] = await self._request("DELETE", mcp_url(name))
        return server
