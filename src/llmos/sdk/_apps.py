"""Apps from the SDK: mixins for `Client` and `AsyncClient`.

`apps()` lists the apps the kernel hosts (name, aliases, description, input
schema); `serve(name, input)` runs one as a process of yours and returns the
kernel's answer: `{"status": "success", "app", "pid", "result", "usage"}`. A
failure raises ApiError like any other call (an unknown app's 404 names the apps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from llmos.sdk._wire import data_of

APPS_PATH: Final = "/serving/apps"
PROCESS_PATH: Final = "/serving/process"


def serve_body(name: str, input: Any) -> dict[str, Any]:
    return {"name": name} if input is None else {"name": name, "input": input}


class AppsMixin:
    """Client's app methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def apps(self) -> list[dict[str, Any]]:
        return data_of(self._request("GET", APPS_PATH))

    def serve(self, name: str, input: Any = None) -> dict[str, Any]:
        """Run app `name` on `input` (a string or an object, as the app says; None:
        its default answer, e.g. a greeting). `["result"]` holds the app's answer."""
        answer: dict[str, Any] = self._request("POST", PROCESS_PATH, serve_body(name, input))
        return answer


class AsyncAppsMixin:
    """AsyncClient's app methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def apps(self) -> list[dict[str, Any]]:
        return data_of(await self._request("GET", APPS_PATH))

    async def serve(self, name: str, input: Any = None) -> dict[str, Any]:
        """As `Client.serve`."""
        body = serve_body(name, input)
        answer: dict[str, Any] = await self._request("POST", PROCESS_PATH, body)
        return answer
