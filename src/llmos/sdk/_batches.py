"""OpenAI-compatible files and batches from the SDK: mixins for `Client` and
`AsyncClient` (the `openai` package works against llmos too; these need no extra).

f = client.file_upload(open("requests.jsonl", "rb").read(), "requests.jsonl")
b = client.batch_create(f["id"], "/v1/chat/completions", metadata={"llmos_max_concurrent": "2"})
client.batch_get(b["id"])["request_counts"]   # {total, completed, failed}
client.file_content(client.batch_get(b["id"])["output_file_id"])   # JSONL bytes
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from llmos.sdk._wire import content_of, data_of


def _create_body(
    input_file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": window,
    }
    if metadata is not None:
        body["metadata"] = metadata
    return body


def _list_params(after: str | None, limit: int) -> dict[str, Any]:
    return {"limit": limit, **({"after": after} if after else {})}


class BatchesMixin:
    """Client's file-object and batch methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    def file_upload(
        self, data: bytes, filename: str = "input.jsonl", purpose: str = "batch"
    ) -> dict[str, Any]:
        """Store `data` as an OpenAI file object: {id: "file-…", bytes, purpose, …}."""
        files = {"file": (filename, data)}
        return dict(self._request("POST", "/v1/files", files=files, data={"purpose": purpose}))

    def file_get(self, file_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/files/{file_id}"))

    def file_content(self, file_id: str) -> bytes:
        """A file's bytes; for a batch's output or error file, its JSONL lines."""
        return content_of(self._send("GET", f"/v1/files/{file_id}/content"))

    def file_delete(self, file_id: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/v1/files/{file_id}"))

    def file_list(self, purpose: str = "batch", limit: int = 100) -> list[dict[str, Any]]:
        params = {"purpose": purpose, "limit": limit}
        return data_of(self._request("GET", "/v1/files", params=params))

    def batch_create(
        self,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        *,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Start a batch over an uploaded JSONL file; llmos resources go in metadata
        (llmos_max_concurrent, llmos_token_budget, llmos_deadline_s)."""
        body = _create_body(input_file_id, endpoint, completion_window, metadata)
        return dict(self._request("POST", "/v1/batches", body))

    def batch_get(self, batch_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/batches/{batch_id}"))

    def batch_list(self, after: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first; `after`: the last id of the previous page."""
        return data_of(self._request("GET", "/v1/batches", params=_list_params(after, limit)))

    def batch_cancel(self, batch_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/v1/batches/{batch_id}/cancel"))


class AsyncBatchesMixin:
    """AsyncClient's file-object and batch methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    async def file_upload(
        self, data: bytes, filename: str = "input.jsonl", purpose: str = "batch"
    ) -> dict[str, Any]:
        files = {"file": (filename, data)}
        return dict(
            await self._request("POST", "/v1/files", files=files, data={"purpose": purpose})
        )

    async def file_get(self, file_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"/v1/files/{file_id}"))

    async def file_content(self, file_id: str) -> bytes:
        return content_of(await self._send("GET", f"/v1/files/{file_id}/content"))

    async def file_delete(self, file_id: str) -> dict[str, Any]:
        return dict(await self._request("DELETE", f"/v1/files/{file_id}"))

    async def file_list(self, purpose: str = "batch", limit: int = 100) -> list[dict[str, Any]]:
        params = {"purpose": purpose, "limit": limit}
        return data_of(await self._request("GET", "/v1/files", params=params))

    async def batch_create(
        self,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        *,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = _create_body(input_file_id, endpoint, completion_window, metadata)
        return dict(await self._request("POST", "/v1/batches", body))

    async def batch_get(self, batch_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"/v1/batches/{batch_id}"))

    async def batch_list(self, after: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        params = _list_params(after, limit)
        return data_of(await self._request("GET", "/v1/batches", params=params))

    async def batch_cancel(self, batch_id: str) -> dict[str, Any]:
        return dict(await self._request("POST", f"/v1/batches/{batch_id}/cancel"))
