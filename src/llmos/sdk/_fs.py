"""Files from the SDK (the per-owner file store, /v1/files/...): mixins for `Client`
and `AsyncClient`.

    client.fs_write("notes/a.txt", "hello")   # a new version; returns its metadata
    client.fs_read("notes/a.txt")             # b"hello"
    client.fs_search("hel*")                  # passages holding every word, best first
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from llmos.sdk import _wire


class FilesMixin:
    """Client's file methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    def fs_write(self, path: str, data: bytes | str) -> dict[str, Any]:
        """Store `data` (text is stored as UTF-8) at `path`, as a new version.
        Returns the file's metadata: path, version, size, sha256, times."""
        url = _wire.file_url(_wire.FILES_PATH, path)
        content = _wire.file_bytes(data)
        info: dict[str, Any] = self._request(
            "PUT", url, content=content, headers=_wire.OCTET_STREAM
        )
        return info

    def fs_read(self, path: str, version: int | None = None) -> bytes:
        """A file's content: the current version, or `version`."""
        url = _wire.file_url(_wire.FILES_PATH, path)
        return _wire.content_of(self._send("GET", url, params=_wire.version_params(version)))

    def fs_list(self, prefix: str = "") -> list[dict[str, Any]]:
        """Your files whose path starts with `prefix`, with their metadata."""
        return _wire.data_of(self._request("GET", _wire.FILES_PATH, params={"prefix": prefix}))

    def fs_stat(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = self._request("GET", _wire.file_url(_wire.FILES_META_PATH, path))
        return info

    def fs_delete(self, path: str) -> dict[str, Any]:
        """Delete a file; its versions stay, so `fs_rollback` can bring it back."""
        info: dict[str, Any] = self._request("DELETE", _wire.file_url(_wire.FILES_PATH, path))
        return info

    def fs_versions(self, path: str) -> list[dict[str, Any]]:
        """A file's kept versions, oldest first; deletions have `deleted: True`."""
        url = _wire.file_url(_wire.FILES_VERSIONS_PATH, path)
        return _wire.data_of(self._request("GET", url))

    def fs_rollback(self, path: str, version: int) -> dict[str, Any]:
        """Write version `version`'s content as the file's newest version."""
        url = _wire.file_url(_wire.FILES_ROLLBACK_PATH, path)
        info: dict[str, Any] = self._request("POST", url, {"version": version})
        return info

    def fs_search(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Your text files with a passage holding every word of `query` (`pre*`
        matches a prefix), best first, each with a `snippet` (matches **marked**)."""
        params = {"q": query, "limit": limit}
        return _wire.data_of(self._request("GET", _wire.FILES_SEARCH_PATH, params=params))


class AsyncFilesMixin:
    """AsyncClient's file methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    async def fs_write(self, path: str, data: bytes | str) -> dict[str, Any]:
        """Store `data` (text is stored as UTF-8) at `path`, as a new version.
        Returns the file's metadata: path, version, size, sha256, times."""
        url = _wire.file_url(_wire.FILES_PATH, path)
        content = _wire.file_bytes(data)
        info: dict[str, Any] = await self._request(
            "PUT", url, content=content, headers=_wire.OCTET_STREAM
        )
        return info

    async def fs_read(self, path: str, version: int | None = None) -> bytes:
        """A file's content: the current version, or `version`."""
        url = _wire.file_url(_wire.FILES_PATH, path)
        return _wire.content_of(await self._send("GET", url, params=_wire.version_params(version)))

    async def fs_list(self, prefix: str = "") -> list[dict[str, Any]]:
        """Your files whose path starts with `prefix`, with their metadata."""
        return _wire.data_of(
            await self._request("GET", _wire.FILES_PATH, params={"prefix": prefix})
        )

    async def fs_stat(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = await self._request(
            "GET", _wire.file_url(_wire.FILES_META_PATH, path)
        )
        return info

    async def fs_delete(self, path: str) -> dict[str, Any]:
        """Delete a file; its versions stay, so `fs_rollback` can bring it back."""
        info: dict[str, Any] = await self._request("DELETE", _wire.file_url(_wire.FILES_PATH, path))
        return info

    async def fs_versions(self, path: str) -> list[dict[str, Any]]:
        """A file's kept versions, oldest first; deletions have `deleted: True`."""
        url = _wire.file_url(_wire.FILES_VERSIONS_PATH, path)
        return _wire.data_of(await self._request("GET", url))

    async def fs_rollback(self, path: str, version: int) -> dict[str, Any]:
        """Write version `version`'s content as the file's newest version."""
        url = _wire.file_url(_wire.FILES_ROLLBACK_PATH, path)
        info: dict[str, Any] = await self._request("POST", url, {"version": version})
        return info

    async def fs_search(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Your text files with a passage holding every word of `query` (`pre*`
        matches a prefix), best first, each with a `snippet` (matches **marked**)."""
        params = {"q": query, "limit": limit}
        return _wire.data_of(await self._request("GET", _wire.FILES_SEARCH_PATH, params=params))
