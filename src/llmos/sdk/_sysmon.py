"""Watching the kernel from the SDK: mixins for `Client` and `AsyncClient`.

client.top()                 # processes with tokens/s, devices, queues, resources
client.metrics_history(300)   # the sampler's samples, oldest first
client.renice(pid, 5)        # lower a process's priority (raising it: admins)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.sdk._wire import data_of


class SysmonMixin:
    """Client's monitoring methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def top(self) -> dict[str, Any]:
        """What `llmos top` shows: processes, devices, queues, resources, alerts."""
        return dict(self._request("GET", "/v1/sys/top"))

    def metrics_history(self, seconds: float = 600) -> list[dict[str, Any]]:
        """Sampled system metrics over the last `seconds`, oldest first."""
        return data_of(self._request("GET", "/v1/sys/history", params={"seconds": seconds}))

    def renice(self, pid: int, priority: int) -> dict[str, Any]:
        """Set a process's priority (0..39, higher runs earlier)."""
        return dict(
            self._request("POST", f"/v1/processes/{int(pid)}/renice", {"priority": priority})
        )


class AsyncSysmonMixin:
    """AsyncClient's monitoring methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def top(self) -> dict[str, Any]:
        return dict(await self._request("GET", "/v1/sys/top"))

    async def metrics_history(self, seconds: float = 600) -> list[dict[str, Any]]:
        return data_of(await self._request("GET", "/v1/sys/history", params={"seconds": seconds}))

    async def renice(self, pid: int, priority: int) -> dict[str, Any]:
        return dict(
            await self._request("POST", f"/v1/processes/{int(pid)}/renice", {"priority": priority})
        )
