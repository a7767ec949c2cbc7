"""Tools from the SDK: mixins for `Client` and `AsyncClient`.

    client.tools()                                    # [{name, description, parameters, source}]
    client.call_tool("calculator", expression="2**10")   # {"expression": ..., "result": 1024}
    client.call_tool("python", code="print(6 * 7)")      # {"stdout": "42\\n", ...}

A tool runs in the kernel with this client's rights (a process token's capability
applies); bad arguments raise ApiError naming `arguments.<field>`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from llmos.sdk._wire import data_of

TOOLS_PATH: Final = "/v1/tools"


def call_url(name: str) -> str:
    return f"{TOOLS_PATH}/{quote(name, safe='')}/call"


class ToolsMixin:
    """Client's tool methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def tools(self) -> list[dict[str, Any]]:
        """The tools this kernel offers: name, description, JSON-schema parameters, source."""
        return data_of(self._request("GET", TOOLS_PATH))

    def call_tool(self, tool: str, /, **arguments: Any) -> Any:
        """Call `tool` with keyword `arguments`; its result (plain JSON)."""
        return self._request("POST", call_url(tool), {"arguments": arguments})["result"]


class AsyncToolsMixin:
    """AsyncClient's tool methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def tools(self) -> list[dict[str, Any]]:
        return data_of(await self._request("GET", TOOLS_PATH))

    async def call_tool(self, tool: str, /, **arguments: Any) -> Any:
        """As `Client.call_tool`."""
        return (await self._request("POST", call_url(tool), {"arguments": arguments}))["result"]
