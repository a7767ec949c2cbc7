"""Encryption at rest and private telemetry from the SDK: mixins for `Client` and
`AsyncClient` (admins; the telemetry export also for viewers).

`key_status()` tells the active data key, every key's state and how many rows are
left to re-encrypt; `key_rotate()` makes a new data key active at once and returns
while the kernel re-encrypts in the background. `telemetry_export(epsilon)` is
per-app, per-hour telemetry with Laplace noise for epsilon-differential privacy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

KEY_PATH: Final = "/v1/sys/key"
KEY_ROTATE_PATH: Final = "/v1/sys/key/rotate"
TELEMETRY_EXPORT_PATH: Final = "/v1/telemetry/export"


def export_params(epsilon: float, hours: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"epsilon": epsilon}
    if hours is not None:
        params["hours"] = hours
    return params


class KeyMixin:
    """Client's key and telemetry-export methods."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def key_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._request("GET", KEY_PATH)
        return status

    def key_rotate(self) -> dict[str, Any]:
        status: dict[str, Any] = self._request("POST", KEY_ROTATE_PATH)
        return status

    def telemetry_export(self, epsilon: float, hours: int | None = None) -> dict[str, Any]:
        """Noisy aggregates of the last `hours` hours (default 24); spends `epsilon`."""
        params = export_params(epsilon, hours)
        export: dict[str, Any] = self._request("GET", TELEMETRY_EXPORT_PATH, params=params)
        return export


class AsyncKeyMixin:
    """AsyncClient's key and telemetry-export methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def key_status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self._request("GET", KEY_PATH)
        return status

    async def key_rotate(self) -> dict[str, Any]:
        status: dict[str, Any] = await self._request("POST", KEY_ROTATE_PATH)
        return status

    async def telemetry_export(self, epsilon: float, hours: int | None = None) -> dict[str, Any]:
        """Noisy aggregates of the last `hours` hours (default 24); spends `epsilon`."""
        params = export_params(epsilon, hours)
        export: dict[str, Any] = await self._request("GET", TELEMETRY_EXPORT_PATH, params=params)
        return export
