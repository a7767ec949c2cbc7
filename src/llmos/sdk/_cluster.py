"""The cluster from the SDK: mixins for `Client` and `AsyncClient`.

client.cluster()                  # replica groups, placement counts, recent scaling events
client.cluster_events(group="g")  # scaling decisions, newest first
client.scale("g", 3)              # add or drain replicas (admin); returns the events
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.sdk._wire import data_of

CLUSTER_PATH = "/v1/cluster"


def _params(limit: int, group: str | None) -> dict[str, Any]:
    return {"limit": limit} | ({"group": group} if group is not None else {})


class ClusterMixin:
    """Client's cluster methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def cluster(self) -> dict[str, Any]:
        """Replica groups (replicas, min..max, devices, load), the placement mode with
        how many requests each rule placed, and the latest scaling events."""
        return dict(self._request("GET", CLUSTER_PATH))

    def cluster_events(self, limit: int = 50, group: str | None = None) -> list[dict[str, Any]]:
        """Scaling decisions (up, down, replace, failed), newest first."""
        return data_of(self._request("GET", CLUSTER_PATH + "/events", params=_params(limit, group)))

    def scale(self, group: str, replicas: int) -> dict[str, Any]:
        """Add or drain replicas of `group` until it has `replicas` (admin; a drained
        replica's requests resume on the others). Returns the group's latest events."""
        body = {"group": group, "replicas": replicas}
        return dict(self._request("POST", CLUSTER_PATH + "/scale", body))


class AsyncClusterMixin:
    """AsyncClient's cluster methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def cluster(self) -> dict[str, Any]:
        return dict(await self._request("GET", CLUSTER_PATH))

    async def cluster_events(
        self, limit: int = 50, group: str | None = None
    ) -> list[dict[str, Any]]:
        params = _params(limit, group)
        return data_of(await self._request("GET", CLUSTER_PATH + "/events", params=params))

    async def scale(self, group: str, replicas: int) -> dict[str, Any]:
        body = {"group": group, "replicas": replicas}
        return dict(await self._request("POST", CLUSTER_PATH + "/scale", body))
