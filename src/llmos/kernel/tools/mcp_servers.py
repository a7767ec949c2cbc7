"""The MCP servers the kernel is attached to, and their tools in the registry.

A server is attached by name with a stdio command: through `mcp.add` (kept in the
`mcp_servers` table; its `env`, which often holds API keys, is sealed at rest) or in
LLMOS_HOME/mcp.json, Claude desktop's format:
    {"mcpServers": {"weather": {"command": "uvx", "args": ["mcp-weather"], "env": {}}}}
The file is read when the kernel starts and on `mcp.restart`; its entries are
removed by editing it. At kernel start every server is started in the background
(a slow or broken one does not hold the kernel up; `mcp.list` tells its state); an
attach waits for its server, so the admin learns at once whether it works.

Each tool of a running server is in the registry as `mcp.<server>.<tool>` (source
`mcp:<server>`) with the server's input schema; a server that exits takes its tools
with it. Servers run as the kernel's OS user, which is why only admins attach them.

Invariant: `conns[name]` is the one live-or-last connection of a server; only the
connection that is `conns[name]` may change the registry's `mcp:<name>` tools."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from llmos.errors import Forbidden, InvalidRequest, LlmosError, NotFound, Overloaded, Unavailable
from llmos.kernel.crypto import Sealed
from llmos.kernel.tools.mcp_client import McpConnection, McpSpec, McpState
from llmos.kernel.tools.registry import Tool
from llmos.params import MAX_MCP_SERVERS, MCP_CALL_TIMEOUT_S, MCP_START_TIMEOUT_S

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.tokens import Caller

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS mcp_servers (
    name TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    args TEXT NOT NULL,
    env BLOB,
    added_by TEXT NOT NULL,
    added_at REAL NOT NULL
);
"""
ENV = Sealed("mcp_servers", "env", ("name",))
CONFIG_FILE = "mcp.json"
SERVER_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$")  # no dots: tools are mcp.<s>.<t>
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ARGS = 256
MAX_ARG_CHARS = 4096


def spec_of(name: Any, command: Any, args: Any, env: Any, origin: str = "api") -> McpSpec:
    """A checked McpSpec; InvalidRequest names the bad field."""
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise InvalidRequest(
            "name must be a letter then up to 63 letters, digits, '_' or '-'", param="name"
        )
    if not _arg(command) or not command:
        raise InvalidRequest("command must be a non-empty string (the program)", param="command")
    args = [] if args is None else args
    if not isinstance(args, list) or len(args) > MAX_ARGS or not all(_arg(a) for a in args):
        raise InvalidRequest(f"args must be a list of at most {MAX_ARGS} strings", param="args")
    env = {} if env is None else env
    if not isinstance(env, dict) or len(env) > MAX_ARGS:
        raise InvalidRequest("env must map variable names to strings", param="env")
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME.match(key) or not _arg(value):
            raise InvalidRequest(f"env: bad variable {str(key)[:64]!r}", param="env")
    return McpSpec(name, command, tuple(args), dict(env), origin)


def _arg(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ARG_CHARS and "\0" not in value


class McpServers:
    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.db = k.store.db
        self.db.executescript(SCHEMA)
        k.keys.adopt([ENV], lambda: None)
        self.conns: dict[str, McpConnection] = {}
        self.start_timeout = MCP_START_TIMEOUT_S
        self.call_timeout = MCP_CALL_TIMEOUT_S
        self._busy: set[str] = set()  # names being attached, restarted or removed
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config_path(self) -> Path:
        return self.k.settings.home / CONFIG_FILE

    # -- what is attached ------------------------------------------------------------
    def specs(self) -> tuple[dict[str, McpSpec], dict[str, str]]:
        """Attached servers by name (mcp.json's first), and mcp.json's bad entries."""
        found, bad = self._configured()
        for row in self.db.execute("SELECT * FROM mcp_servers ORDER BY name"):
            env = json.loads(self.k.keys.open_text(ENV, row["env"], row["name"]))
            spec = McpSpec(row["name"], row["command"], tuple(json.loads(row["args"])), env)
            found.setdefault(spec.name, spec)
        return found, bad

    def _configured(self) -> tuple[dict[str, McpSpec], dict[str, str]]:
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return {}, {}
        except OSError as exc:
            return {}, {CONFIG_FILE: f"cannot read {self.config_path}: {exc.strerror}"}
        try:
            servers = json.loads(text).get("mcpServers", {})
            if not isinstance(servers, dict):
                raise ValueError("mcpServers must be an object")
        except (ValueError, AttributeError) as exc:
            return {}, {CONFIG_FILE: f"{self.config_path} is not valid: {exc}"}
        found: dict[str, McpSpec] = {}
        bad: dict[str, str] = {}
        for name, entry in servers.items():
            try:
                if not isinstance(entry, dict):
                    raise InvalidRequest("must be an object with a command", param="command")
                found[name] = spec_of(
                    name, entry.get("command"), entry.get("args"), entry.get("env"), "config"
                )
            except InvalidRequest as exc:
                bad[str(name)] = f"{CONFIG_FILE}: {exc.message}"
        return found, bad

    def listing(self) -> list[dict[str, Any]]:
        specs, bad = self.specs()
        rows = [self._info(spec, self.conns.get(name)) for name, spec in sorted(specs.items())]
        rows += [
            {"name": name, "origin": "config", "state": "invalid", "error": why}
            for name, why in sorted(bad.items())
        ]
        return rows

    def _info(self, spec: McpSpec, conn: McpConnection | None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": spec.name,
            "command": spec.command,
            "args": list(spec.args),
            "env": sorted(spec.env),  # names only: values may be secrets
            "origin": spec.origin,
            "state": "stopped",
            "started_at": None,
            "error": None,
            "tools": [],
        }
        if conn is None:
            return info
        info["state"] = conn.state.name.lower()
        if conn.state == McpState.RUNNING:
            source = f"mcp:{spec.name}"
            info["started_at"] = conn.started_at
            info["tools"] = [t.name for t in self.k.tools.listing() if t.source == source]
        else:
            info["error"] = conn.error
        return info

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """At kernel start: every attached server, in the background."""
        specs, bad = self.specs()
        for why in bad.values():
            log.warning("%s", why)
        for spec in specs.values():
            task = asyncio.create_task(self._bring_up(spec), name=f"mcp-start:{spec.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        conns = list(self.conns.values())
        await asyncio.gather(*(c.stop() for c in conns), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _bring_up(self, spec: McpSpec) -> None:
        try:
            await self._launch(spec)
        except LlmosError as exc:
            log.warning("MCP server %r did not start: %s", spec.name, exc.message)
        except Exception:  # the failure is in the server's state; the rest is a bug
            log.exception("MCP server %r", spec.name)

    async def _launch(self, spec: McpSpec) -> McpConnection:
        """Start `spec`'s server as `conns[name]` and register its tools."""
        log_path = self.k.settings.home / "mcp" / f"{spec.name}.log"
        conn = McpConnection(spec, log_path, self._gone)
        self.conns[spec.name] = conn
        try:
            await conn.start(self.start_timeout)
        except BaseException:
            if conn.state <= McpState.RUNNING:  # the caller went away mid-start: stop it
                task = asyncio.create_task(conn.stop())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            raise
        self._register(conn)
        return conn

    def _register(self, conn: McpConnection) -> None:
        if self.conns.get(conn.spec.name) is not conn or conn.state != McpState.RUNNING:
            return
        server = conn.spec.name
        for t in conn.tools:
            tool = Tool(
                f"mcp.{server}.{t.name}", t.description, t.input_schema,
                self._handler(server, t.name), f"mcp:{server}",
            )  # fmt: skip
            try:
                self.k.tools.register(tool, replace=True)
            except (InvalidRequest, jsonschema.SchemaError) as exc:
                log.warning("MCP server %r: tool %r left out: %s", server, t.name, exc)

    def _gone(self, conn: McpConnection) -> None:
        """A connection ended (stopped, crashed or never came up)."""
        if self.conns.get(conn.spec.name) is conn:
            self.k.tools.unregister_source(f"mcp:{conn.spec.name}")

    def _handler(self, server: str, tool: str) -> Any:
        async def call(k: Kernel, c: Caller, args: dict[str, Any]) -> Any:
            conn = self.conns.get(server)
            if conn is None:
                raise Unavailable(f"MCP server {server!r} is not attached")
            return await conn.call(tool, args, self.call_timeout)

        return call

    # -- the syscalls' work ------------------------------------------------------------
    async def add(self, spec: McpSpec, owner: str) -> dict[str, Any]:
        specs, _ = self.specs()
        if spec.name in specs:
            raise InvalidRequest(f"an MCP server named {spec.name!r} exists", param="name")
        if len(specs) >= MAX_MCP_SERVERS:
            raise Overloaded(f"at most {MAX_MCP_SERVERS} MCP servers may be attached")
        with self._holding(spec.name):
            try:
                conn = await self._launch(spec)
            except BaseException:
                self.conns.pop(spec.name, None)
                raise
            env = self.k.keys.seal_text(ENV, json.dumps(spec.env), spec.name)
            self.db.execute(
                "INSERT INTO mcp_servers (name, command, args, env, added_by, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (spec.name, spec.command, json.dumps(spec.args), env, owner, time.time()),
            )
        return self._info(spec, conn)

    async def remove(self, name: Any) -> dict[str, Any]:
        spec = self._find(name)
        name = spec.name
        if spec.origin == "config":
            raise Forbidden(
                f"{name!r} is defined in {self.config_path}: remove it there", param="name"
            )
        with self._holding(name):
            self.db.execute("DELETE FROM mcp_servers WHERE name = ?", (name,))
            conn = self.conns.pop(name, None)
            self.k.tools.unregister_source(f"mcp:{name}")
            if conn is not None:
                await conn.stop()
        return {**self._info(spec, None), "state": "removed"}

    async def restart(self, name: Any) -> dict[str, Any]:
        """Stop (if running) and start again, with mcp.json read afresh."""
        spec = self._find(name)
        name = spec.name
        with self._holding(name):
            old = self.conns.pop(name, None)
            self.k.tools.unregister_source(f"mcp:{name}")
            if old is not None:
                await old.stop()
            conn = await self._launch(spec)
        return self._info(spec, conn)

    def _find(self, name: Any) -> McpSpec:
        specs, _ = self.specs()
        if not isinstance(name, str) or name not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise NotFound(f"no MCP server named {name!r}; attached: {known}", param="name")
        return specs[name]

    @contextlib.contextmanager
    def _holding(self, name: str) -> Iterator[None]:
        """`name` is busy (attached, restarted or removed) for the `with` block."""
        if name in self._busy:
            raise Overloaded(f"MCP server {name!r} is being changed; try again", param="name")
        self._busy.add(name)
        try:
            yield
        finally:
            self._busy.discard(name)
