"""Connection limits at the HTTP edge: header size and slow readers.

- HeaderGuard: a request line plus headers over `max_header_bytes` gets 431 with the
  usual JSON error (uvicorn's own parser refuses far larger ones, at 4x the limit,
  with a plain 400 before any app code runs; see server.py).
- SendGuard: a client that does not accept a chunk of its response within
  `send_timeout_s` (its socket and the server's write buffer are full) is dropped:
  the response stops there, so a stream's generator is closed and its generation
  cancelled, and nothing is kept for a reader that has stopped reading. The kernel
  never waits for a reader: a stalled client cannot hold a slot past its request's
  own deadline, but without this guard its response would be held forever."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmos.errors import HeadersTooLarge
from llmos.params import Settings

log = logging.getLogger(__name__)


def install(app: FastAPI, settings: Settings) -> None:
    """Outermost first: the header check runs before anything reads the request."""
    app.add_middleware(SendGuard, timeout=settings.send_timeout_s)
    app.add_middleware(HeaderGuard, limit=settings.max_header_bytes)


def header_bytes(scope: Scope) -> int:
    """Bytes of the request line and headers as sent (`name: value\\r\\n` each)."""
    line = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
    return line + sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or [])


class HeaderGuard:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (size := header_bytes(scope)) > self.limit:
            err = HeadersTooLarge(
                f"request line and headers are {size} bytes; the limit is {self.limit}",
                param="headers",
            )
            await JSONResponse(err.to_dict(), status_code=err.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ClientStalled(Exception):
    """Raised out of `send` when the client accepts no data for too long."""


class SendGuard:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            try:
                async with asyncio.timeout(self.timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalled from None

        try:
            await self.app(scope, receive, guarded)
        except* ClientStalled:
            # uvicorn then closes the connection (and says the response was cut short).
            client = scope.get("client") or ("?", 0)
            log.warning(
                "dropped %s:%s: it accepted no response data for %g s (%s %s)",
                client[0],
                client[1],
                self.timeout,
                scope["method"],
                scope["path"],
            )
