"""One attached MCP server: its process and its client session.

The `mcp` client is built of anyio context managers (the stdio transport, the
session's task group) that must be entered and left in the same task, so each
server lives in one long-running task (`_run`) that opens them, says it is ready,
and waits to be told to stop or for the server to go away. Tool calls are made from
the callers' own tasks on the session object (JSON-RPC correlates the answers), so
calls to one server run concurrently and no lock is held across a call.

Invariant: `session` is set only while the state is RUNNING; once the task ends
(stop, crash, failed start) it is None and `on_gone` has been told, once.
Foreign errors (MCPError, OSError, pydantic's) are translated here into LlmosErrors."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, LlmosError, Timeout, ToolError, Unavailable

if TYPE_CHECKING:
    from anyio import CancelScope
    from mcp import ClientSession
    from mcp.types import CallToolResult

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0  # the transport's own shutdown is bounded (stdin close, TERM, KILL)
LOG_TAIL_BYTES = 600  # of the server's stderr, quoted in an error
CONNECTION_CLOSED = -32000  # the MCP client's error code (mcp.types.CONNECTION_CLOSED)


class McpState(enum.IntEnum):
    """Ordered: everything past RUNNING is an end (`state > RUNNING`)."""

    STARTING = 0
    RUNNING = 1
    FAILED = 2  # never came up
    EXITED = 3  # was running, and went away on its own
    STOPPED = 4  # we stopped it


@dataclass(frozen=True)
class McpSpec:
    """How to start a server: a stdio command, as in Claude desktop's mcpServers."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    origin: str = "api"  # "api" (kept in the database) | "config" (LLMOS_HOME/mcp.json)


@dataclass(frozen=True)
class McpTool:
    name: str
    description: str
    input_schema: dict[str, Any]


class McpConnection:
    def __init__(
        self, spec: McpSpec, log_path: Path, on_gone: Callable[[McpConnection], None]
    ) -> None:
        self.spec = spec
        self.log_path = log_path  # the server's stderr
        self.state = McpState.STARTING
        self.error: str | None = None
        self.failure: BaseException | None = None  # what ended it, if not a stop
        self.tools: list[McpTool] = []
        self.session: ClientSession | None = None
        self.started_at: float | None = None
        self._on_gone = on_gone
        self._ready = asyncio.Event()  # set once RUNNING or ended
        self._wake = asyncio.Event()  # stop asked, or the server's output ended
        self._task: asyncio.Task[None] | None = None
        self._scope: CancelScope | None = None  # the session's body, in `_serve`

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, timeout: float) -> None:
        """Start the server, shake hands and list its tools; raise if it cannot."""
        self._task = asyncio.create_task(self._run(timeout), name=f"mcp:{self.spec.name}")
        await self._ready.wait()
        if self.state != McpState.RUNNING:
            why = f"MCP server {self.spec.name!r} did not start: {self.error or 'it was stopped'}"
            if isinstance(self.failure, LlmosError):
                raise self.failure
            if isinstance(self.failure, OSError) and not isinstance(self.failure, TimeoutError):
                # no such program, not executable, ...
                raise InvalidRequest(why, param="command")
            raise ToolError(why)

    async def stop(self) -> None:
        if self._task is None:
            return
        if self.state <= McpState.RUNNING:
            self.state = McpState.STOPPED
        self._wake.set()
        if self._scope is not None:  # also cuts a handshake short
            self._scope.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_S)
        except TimeoutError:  # the transport bounds its shutdown: only a bug lands here
            log.warning("MCP server %r did not stop in %gs", self.spec.name, STOP_GRACE_S)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, timeout: float) -> None:
        try:
            await self._serve(timeout)
        except Exception as exc:
            self.failure = _root(exc)
            self.error = self._explain(self.failure, timeout)
            if self.state == McpState.STARTING:
                self.state = McpState.FAILED
            log.warning("MCP server %r: %s", self.spec.name, self.error)
        finally:
            self.session = None
            if self.state <= McpState.RUNNING:
                self.state = McpState.FAILED if self.state == McpState.STARTING else McpState.EXITED
                self.error = self.error or self._explain(None, timeout)
            self._ready.set()
            self._on_gone(self)

    async def _serve(self, timeout: float) -> None:
        """The server's whole life, in this one task."""
        try:
            import anyio
            from mcp import ClientSession, StdioServerParameters, stdio_client
        except ImportError:
            raise Unavailable(
                "MCP needs the mcp package: pip install 'llmos[tools]'", param="command"
            ) from None
        params = StdioServerParameters(
            command=self.spec.command, args=list(self.spec.args), env=self.spec.env or None
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                # A relay between transport and session tells us when the server's
                # output ends (it exited or closed stdout) while we wait.
                relay_send, relay_recv = anyio.create_memory_object_stream[Any](0)

                async def relay() -> None:
                    with contextlib.suppress(anyio.ClosedResourceError):
                        async with relay_send:
                            async for item in read:
                                try:
                                    await relay_send.send(item)
                                except anyio.BrokenResourceError:
                                    return
                    self._wake.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(relay)
                    async with relay_recv, ClientSession(relay_recv, write) as session:
                        with anyio.CancelScope() as self._scope:
                            if self.state == McpState.STOPPED:
                                self._scope.cancel()
                            with anyio.fail_after(timeout):
                                await session.initialize()
                                self.tools = await _list_tools(session)
                            self.session = session
                            self.started_at = time.time()
                            self.state = McpState.RUNNING
                            self._ready.set()
                            await self._wake.wait()
                        self.session = None
                    tg.cancel_scope.cancel()

    def _explain(self, exc: BaseException | None, timeout: float) -> str:
        if isinstance(exc, TimeoutError):
            why = f"no answer to the MCP handshake within {timeout:g}s"
        elif isinstance(exc, LlmosError):
            why = exc.message
        elif exc is not None and getattr(exc, "code", None) == CONNECTION_CLOSED:
            why = "the server exited (or closed its output) before it answered"
        elif isinstance(exc, OSError):
            why = f"cannot run {self.spec.command!r}: {exc.strerror or exc}"
        elif exc is not None:
            why = str(exc) or type(exc).__name__
        else:
            why = "the server process exited"
        tail = self.log_tail()
        return f"{why}; its stderr ends: {tail}" if tail else why

    def log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    # -- calls ---------------------------------------------------------------------
    async def call(self, tool: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One tools/call: {"text": the text parts joined, "structured": ...}."""
        from mcp import MCPError
        from mcp.types import REQUEST_TIMEOUT

        session = self.session
        where = f"MCP server {self.spec.name!r}"
        if session is None:
            raise Unavailable(f"{where} is not running ({self.error or self.state.name.lower()})")
        try:
            result = await session.call_tool(tool, args, read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise Timeout(f"{where}: {tool} did not answer within {timeout:g}s") from None
            if exc.code == CONNECTION_CLOSED:
                raise Unavailable(f"{where} went away during the call to {tool}") from None
            raise ToolError(f"{where}: {tool} failed: {exc.message}") from None
        except LlmosError:
            raise
        except Exception as exc:  # a result the client refused (schema, protocol)
            raise ToolError(f"{where}: {tool} gave a bad answer: {exc}") from None
        return _outcome(f"{self.spec.name}.{tool}", result)


async def _list_tools(session: ClientSession) -> list[McpTool]:
    tools: list[McpTool] = []
    cursor: str | None = None
    from mcp.types import PaginatedRequestParams

    while True:
        params = None if cursor is None else PaginatedRequestParams(cursor=cursor)
        page = await session.list_tools(params=params)
        tools += [
            McpTool(t.name, t.description or t.title or t.name, dict(t.input_schema))
            for t in page.tools
        ]
        cursor = page.next_cursor
        if cursor is None:
            return tools


def _outcome(name: str, result: CallToolResult) -> dict[str, Any]:
    parts: list[str] = []
    for block in result.content:
        if block.type == "text":
            parts.append(block.text)
        elif block.type == "resource":
            text = getattr(block.resource, "text", None)
            parts.append(text if text is not None else f"[resource {block.resource.uri}]")
        elif block.type == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:  # image, audio: binary, named rather than inlined
            parts.append(f"[{block.type} {block.mime_type}]")
    text = "\n".join(parts)
    if result.is_error:
        raise ToolError(f"MCP tool {name} failed: {text or 'no message'}")
    out: dict[str, Any] = {"text": text}
    if result.structured_content is not None:
        out["structured"] = result.structured_content
    return out


def _root(exc: BaseException) -> BaseException:
    """The one error inside anyio's (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
