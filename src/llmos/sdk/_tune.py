"""Auto-tuning from the SDK: mixins for `Client` and `AsyncClient`.

client.tune()                    # measure, hill-climb, apply; returns the decision
client.tune(dry_run=True)        # measure and report only
client.tune_history()            # the decisions, newest first
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.sdk._wire import data_of

TUNE_PATH = "/v1/tune"


def _body(device: str | None, dry_run: bool, max_seconds: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"dry_run": dry_run}
    if device is not None:
        body["device"] = device
    if max_seconds is not None:
        body["max_seconds"] = max_seconds
    return body


def _params(limit: int, device: str | None) -> dict[str, Any]:
    return {"limit": limit} | ({"device": device} if device is not None else {})


class TuneMixin:
    """Client's auto-tuning methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def tune(
        self, device: str | None = None, *, dry_run: bool = False, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """Tune a device's settings (admin): the decision, with the settings and the
        measured figures before and after, every trial, whether it was kept and why."""
        return dict(self._request("POST", TUNE_PATH, _body(device, dry_run, max_seconds)))

    def tune_history(self, limit: int = 50, device: str | None = None) -> list[dict[str, Any]]:
        """Recorded tuning decisions, newest first."""
        return data_of(self._request("GET", TUNE_PATH + "/history", params=_params(limit, device)))


class AsyncTuneMixin:
    """AsyncClient's auto-tuning methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def tune(
        self, device: str | None = None, *, dry_run: bool = False, max_seconds: float | None = None
    ) -> dict[str, Any]:
        return dict(await self._request("POST", TUNE_PATH, _body(device, dry_run, max_seconds)))

    async def tune_history(
        self, limit: int = 50, device: str | None = None
    ) -> list[dict[str, Any]]:
        params = _params(limit, device)
        return data_of(await self._request("GET", TUNE_PATH + "/history", params=params))
