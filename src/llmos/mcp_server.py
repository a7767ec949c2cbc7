"""`llmos mcp`: llmos itself as an MCP server over stdio, so MCP clients (Claude
desktop, IDEs, other agents) can make its syscalls.

A front end like the CLI: it talks to a running kernel over HTTP with the SDK, as
the token it is given, so the kernel's access rules decide everything. Every
syscall the token may make is an MCP tool named with `_` for `.` (`proc_list`,
`fs_write`), described by its doc, with a precise input schema for the common
calls and an open object schema for the rest. The kernel's registered tools are
also offered directly as `tool__<name>` (called through `tool.call`). A kernel
error becomes a tool result with `isError` and the kernel's message."""

from __future__ import annotations

import json
import logging
import re
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from llmos.sdk import ApiError, AsyncClient

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext
    from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, Tool

log = logging.getLogger(__name__)

TOOL_PREFIX = "tool__"  # a kernel tool offered directly; syscall names have no "__"
LLM_CALLS = frozenset({"llm.chat", "llm.complete"})  # answered with their text; model optional

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}


def _obj(props: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props or {}}
    if required:
        schema["required"] = list(required)
    return schema  # other arguments stay allowed: the kernel checks every one


MESSAGES = {
    "type": "array",
    "minItems": 1,
    "items": _obj(
        {"role": {"enum": ["system", "developer", "user", "assistant", "tool"]}, "content": STR},
        ("role", "content"),
    ),
}
PID = _obj({"pid": INT}, ("pid",))
PATH = _obj({"path": STR, "version": INT}, ("path",))
MEMORY_ID = _obj({"id": INT}, ("id",))
SCHEMAS: dict[str, dict[str, Any]] = {
    "llm.chat": _obj(
        {"messages": MESSAGES, "model": STR, "max_tokens": INT, "temperature": NUM},
        ("messages",),
    ),
    "llm.complete": _obj(
        {"prompt": STR, "model": STR, "max_tokens": INT, "temperature": NUM}, ("prompt",)
    ),
    "proc.spawn": _obj({"name": STR, "priority": INT, "token_budget": INT}),
    "proc.list": _obj(),
    "proc.get": PID,
    "proc.kill": PID,
    "fs.read": PATH,
    "fs.stat": PATH,
    "fs.versions": PATH,
    "fs.delete": PATH,
    "fs.rollback": _obj({"path": STR, "version": INT}, ("path", "version")),
    "fs.write": _obj(
        {"path": STR, "content": STR, "content_b64": {**STR, "contentEncoding": "base64"}},
        ("path",),
    ),
    "fs.list": _obj({"prefix": STR}),
    "fs.search": _obj({"query": STR, "limit": INT}, ("query",)),
    "mem.add": _obj(
        {"text": STR, "tags": {"type": "array", "items": STR}, "shared": {"type": "boolean"}},
        ("text",),
    ),
    "mem.search": _obj({"query": STR, "k": INT, "tag": STR}, ("query",)),
    "mem.get": MEMORY_ID,
    "mem.delete": MEMORY_ID,
    "mem.list": _obj({"limit": INT, "offset": INT, "tag": STR}),
    "tool.list": _obj(),
    "tool.call": _obj({"name": STR, "arguments": _obj()}, ("name",)),
    "sys.info": _obj(),
}


def tool_name(syscall: str) -> str:
    return syscall.replace(".", "_")


def kernel_tool_name(name: str) -> str:
    return TOOL_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", name)


class LlmosMcp:
    """The MCP handlers, proxying to one kernel through `client`."""

    def __init__(self, client: AsyncClient, kernel_tools: bool = True) -> None:
        self.client = client
        self.kernel_tools = kernel_tools
        self.routes: dict[str, tuple[str, str]] = {}  # MCP name -> ("syscall"|"tool", name)
        self.model: str | None = None  # for LLM calls that name none

    async def list_tools(self, ctx: ServerRequestContext[Any], params: Any) -> ListToolsResult:
        from mcp.types import ListToolsResult

        return ListToolsResult(tools=await self._tools())

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        route = self.routes.get(params.name)
        if route is None:  # not listed yet, or listed by a client that guessed
            await self._tools()
            route = self.routes.get(params.name)
        if route is None:
            return _failure(f"no tool named {params.name!r}; list the tools to see them")
        kind, target = route
        args = dict(params.arguments or {})
        llm = kind == "syscall" and target in LLM_CALLS
        try:
            if llm and args.get("model") is None:
                args["model"] = await self._default_model()
            if kind == "tool":
                result = await self.client.syscall("tool.call", {"name": target, "arguments": args})
            else:
                result = await self.client.syscall(target, args)
        except ApiError as exc:
            return _failure(_explain(exc))
        return _success(result, llm)

    async def _default_model(self) -> str:
        """The kernel's first model, for LLM calls that name none."""
        if self.model is None:
            models = await self.client.syscall("sys.models")
            if not models:
                raise ApiError(503, "the kernel serves no model", param="model")
            self.model = str(models[0]["id"])
        return self.model

    async def _tools(self) -> list[Tool]:
        from mcp import MCPError
        from mcp.types import INTERNAL_ERROR, Tool

        try:
            table = await self.client.syscalls()
            allowed = {s["name"]: s for s in table if s.get("allowed")}
            kernel_tools = []
            if self.kernel_tools and {"tool.list", "tool.call"} <= allowed.keys():
                kernel_tools = await self.client.syscall("tool.list")
        except ApiError as exc:  # the kernel is gone, or the token is no good
            raise MCPError(INTERNAL_ERROR, _explain(exc)) from None
        tools: list[Tool] = []
        # Calls go to every syscall (the kernel says no, and audits it); only those
        # the token may make are listed.
        routes = {tool_name(s["name"]): ("syscall", s["name"]) for s in table}
        for name, s in sorted(allowed.items()):
            schema = SCHEMAS.get(name, _obj())
            tools.append(Tool(name=tool_name(name), description=s["doc"], input_schema=schema))
        for t in kernel_tools:
            mcp_name = kernel_tool_name(t["name"])
            if mcp_name in routes:
                log.warning("kernel tool %r left out: its MCP name is taken", t["name"])
                continue
            routes[mcp_name] = ("tool", t["name"])
            description = f"{t.get('description') or t['name']} (llmos tool {t['name']})"
            schema = t.get("parameters") or _obj()
            tools.append(Tool(name=mcp_name, description=description, input_schema=schema))
        self.routes = routes
        return tools


def _explain(exc: ApiError) -> str:
    param = f" (field: {exc.param})" if exc.param else ""
    return f"{exc.status} {exc.type}: {exc.message}{param}"


def _failure(message: str) -> CallToolResult:
    from mcp.types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(text=message)], is_error=True)


def _success(result: Any, llm: bool) -> CallToolResult:
    """The result as JSON text (an LLM call's: its reply) and as structured content."""
    from mcp.types import CallToolResult, TextContent

    if llm and isinstance(result, dict) and isinstance(result.get("text"), str):
        text = result["text"]
    else:
        text = json.dumps(result, ensure_ascii=False, indent=1)
    return CallToolResult(content=[TextContent(text=text)], structured_content={"result": result})


def _llmos_version() -> str:
    try:
        return version("llmos")
    except PackageNotFoundError:
        return "0"


async def serve(url: str | None, token: str | None, kernel_tools: bool = True) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes it."""
    from mcp.server import Server
    from mcp.server.stdio import stdio_server

    async with AsyncClient(url, token) as client:
        await client.syscalls()  # fail now, with a clear message, if the kernel is not there
        handlers = LlmosMcp(client, kernel_tools)
        server: Server[Any] = Server(
            "llmos",
            version=_llmos_version(),
            instructions="The syscalls of an llmos kernel: processes, LLM calls, files, "
            "memories, tools. Errors come back as tool results with isError.",
            on_list_tools=handlers.list_tools,
            on_call_tool=handlers.call_tool,
        )
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
