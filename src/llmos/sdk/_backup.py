"""Backups from the SDK (admins): mixins for `Client` and `AsyncClient`.

client.backup()                      # a snapshot under LLMOS_HOME/backups; its manifest
client.backup(to="/srv/bk/1", include_key=True)
client.backups()                     # backups under LLMOS_HOME/backups, newest first
client.backup_download("snap.tar")   # a fresh snapshot as a tar (what a standby pulls)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from llmos.sdk._errors import error_from_response, transport_error
from llmos.sdk._wire import data_of


def _body(to: str | None, include_key: bool) -> dict[str, Any]:
    return {"include_key": include_key, **({"to": str(to)} if to is not None else {})}


class BackupMixin:
    """Client's backup methods (sync)."""

    if TYPE_CHECKING:
        _http: httpx.Client
        url: str

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def backup(self, to: str | None = None, include_key: bool = False) -> dict[str, Any]:
        """A consistent snapshot of the kernel's state; returns its manifest and path.
        With `include_key` the master key travels with it: whoever has it reads all."""
        return dict(self._request("POST", "/v1/backups", _body(to, include_key)))

    def backups(self) -> list[dict[str, Any]]:
        """The backups under LLMOS_HOME/backups, newest first, with manifest summaries."""
        return data_of(self._request("GET", "/v1/backups"))

    def backup_download(
        self, dest: str | Path, include_key: bool = False, timeout: float = 300.0
    ) -> Path:
        """A fresh snapshot of the kernel's state, streamed into the tar file `dest`."""
        out = Path(dest)
        params = {"include_key": str(include_key).lower()}
        try:
            with self._http.stream(
                "GET", "/v1/backups/stream", params=params, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                with out.open("wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
        return out


class AsyncBackupMixin:
    """AsyncClient's backup methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def backup(self, to: str | None = None, include_key: bool = False) -> dict[str, Any]:
        return dict(await self._request("POST", "/v1/backups", _body(to, include_key)))

    async def backups(self) -> list[dict[str, Any]]:
        return data_of(await self._request("GET", "/v1/backups"))
