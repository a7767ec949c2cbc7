"""MCP in both directions, with real peers:
- the kernel attached to a real MCP server (a script written here, on the `mcp`
  package's MCPServer), its tools in the registry and called through `tool.call`;
- llmos served as an MCP server (`llmos mcp`), driven by the `mcp` package's client
  over stdio against a live kernel.
Every process a test starts is stopped, and checked gone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import Result
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import Client
from tests._live_server import LiveServer, closed_port_url
from tests.conftest import MockKernel

DEMO = textwrap.dedent(
    '''
    import os

    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    if os.environ.get("PID_FILE"):
        with open(os.environ["PID_FILE"], "a") as f:
            f.write(f"{os.getpid()}\\n")

    app = MCPServer("demo")


    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b


    @app.tool()
    def echo(text: str) -> str:
        """Say the text back."""
        return text


    @app.tool()
    def secret() -> str:
        """The DEMO_SECRET this server was started with."""
        return os.environ.get("DEMO_SECRET", "")


    @app.tool()
    def fail(reason: str) -> str:
        """Always fails, saying why."""
        raise ToolError(f"refused: {reason}")


    @app.tool()
    def crash() -> str:
        """Ends this server's process at once."""
        os._exit(3)


    app.run()
    '''
)
DEMO_TOOLS = ["mcp.demo.add", "mcp.demo.crash", "mcp.demo.echo", "mcp.demo.fail", "mcp.demo.secret"]
LLMOS = Path(sys.executable).with_name("llmos")  # the console script in this venv


@pytest.fixture
def demo(tmp_path: Path) -> dict[str, Any]:
    """mcp.add's arguments for the demo server; `pids` lists the processes it ran."""
    script = tmp_path / "demo_server.py"
    script.write_text(DEMO)
    pids = tmp_path / "demo.pids"
    return {
        "name": "demo",
        "command": sys.executable,
        "args": [str(script)],
        "env": {"DEMO_SECRET": "s3cret-value", "PID_FILE": str(pids)},
    }


def pids_of(spec: dict[str, Any]) -> list[int]:
    path = Path(spec["env"]["PID_FILE"])
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def syscall(mock: MockKernel, name: str, args: dict[str, Any], token: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await mock.client.post(f"/v1/syscalls/{name}", json=args, headers=headers)


async def tool_names(mock: MockKernel) -> list[str]:
    r = await syscall(mock, "tool.list", {})
    assert r.status_code == 200, r.text
    return sorted(t["name"] for t in r.json()["result"])


async def call_tool(mock: MockKernel, name: str, **arguments: Any):  # type: ignore[no-untyped-def]
    return await syscall(mock, "tool.call", {"name": name, "arguments": arguments})


async def until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)


# -- the kernel as an MCP client ---------------------------------------------------
async def test_an_attached_server_s_tools_are_listed_and_called(
    mock: MockKernel, demo: dict[str, Any]
) -> None:
    r = await mock.client.post("/v1/mcp", json=demo)
    assert r.status_code == 201, r.text
    server = r.json()
    assert server["state"] == "running" and server["origin"] == "api"
    assert sorted(server["tools"]) == DEMO_TOOLS
    assert server["env"] == ["DEMO_SECRET", "PID_FILE"]  # names, never values
    listed = await mock.client.get("/v1/mcp")
    assert [s["name"] for s in listed.json()["data"]] == ["demo"]
    assert "s3cret-value" not in listed.text

    r = await syscall(mock, "tool.list", {})
    specs = {t["name"]: t for t in r.json()["result"]}
    assert set(DEMO_TOOLS) <= specs.keys()
    add = specs["mcp.demo.add"]
    assert add["source"] == "mcp:demo" and add["description"] == "Add two integers."
    assert add["parameters"]["required"] == ["a", "b"]

    r = await call_tool(mock, "mcp.demo.add", a=2, b=40)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"text": "42", "structured": {"result": 42}}
    r = await call_tool(mock, "mcp.demo.echo", text="héllo\nworld")
    assert r.json()["result"]["text"] == "héllo\nworld"
    r = await call_tool(mock, "mcp.demo.secret")
    assert r.json()["result"]["text"] == "s3cret-value"  # env reaches the server

    # Many calls at once on one server: answers are matched to their calls.
    answers = await asyncio.gather(*(call_tool(mock, "mcp.demo.add", a=i, b=i) for i in range(8)))
    assert [a.json()["result"]["structured"]["result"] for a in answers] == [
        2 * i for i in range(8)
    ]


async def test_bad_calls_and_failing_tools_give_clear_errors(
    mock: MockKernel, demo: dict[str, Any]
) -> None:
    assert (await mock.client.post("/v1/mcp", json=demo)).status_code == 201
    r = await call_tool(mock, "mcp.demo.add", a=1)  # checked against the server's schema
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "arguments" and "'b' is a required property" in error["message"]
    r = await call_tool(mock, "mcp.demo.add", a="one", b=2)
    assert r.status_code == 400 and r.json()["error"]["param"] == "arguments.a"

    r = await call_tool(mock, "mcp.demo.fail", reason="no way")
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["type"] == "tool_error"
    # the server's own words, after ours
    assert (
        error["message"] == "MCP tool demo.fail failed: Error executing tool fail: refused: no way"
    )


async def test_detach_stops_the_server_and_drops_its_tools(
    mock: MockKernel, demo: dict[str, Any]
) -> None:
    assert (await mock.client.post("/v1/mcp", json=demo)).status_code == 201
    [pid] = pids_of(demo)
    assert not gone(pid)
    r = await mock.client.delete("/v1/mcp/demo")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "removed"
    assert gone(pid)
    assert not [n for n in await tool_names(mock) if n.startswith("mcp.")]
    r = await call_tool(mock, "mcp.demo.add", a=1, b=2)
    assert r.status_code == 404 and r.json()["error"]["param"] == "name"
    assert (await mock.client.get("/v1/mcp")).json()["data"] == []
    r = await mock.client.delete("/v1/mcp/demo")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "no MCP server named 'demo'; attached: none"


async def test_a_crashed_server_loses_its_tools_and_restarts(
    mock: MockKernel, demo: dict[str, Any]
) -> None:
    assert (await mock.client.post("/v1/mcp", json=demo)).status_code == 201
    r = await call_tool(mock, "mcp.demo.crash")
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "MCP server 'demo' went away during the call to crash"

    async def exited() -> bool:
        [server] = (await mock.client.get("/v1/mcp")).json()["data"]
        return bool(server["state"] == "exited")

    await until(exited)
    [server] = (await mock.client.get("/v1/mcp")).json()["data"]
    assert server["tools"] == [] and server["error"] == "the server process exited"
    assert not [n for n in await tool_names(mock) if n.startswith("mcp.")]

    r = await mock.client.post("/v1/mcp/demo/restart")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "running" and sorted(r.json()["tools"]) == DEMO_TOOLS
    r = await call_tool(mock, "mcp.demo.add", a=1, b=2)
    assert r.json()["result"]["text"] == "3"
    first, second = pids_of(demo)
    assert gone(first) and not gone(second)


async def test_attach_is_checked_and_for_admins_only(
    mock: MockKernel, demo: dict[str, Any], tmp_path: Path
) -> None:
    users = {}
    for name, role in (("uma", "user"), ("vic", "viewer")):
        r = await mock.client.post("/v1/users", json={"name": name, "role": role})
        users[role] = r.json()["token"]
    for role in ("user", "viewer"):
        r = await syscall(mock, "mcp.add", demo, token=users[role])
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == f"role {role!r} may not call mcp.add"
    r = await syscall(mock, "mcp.list", {}, token=users["viewer"])
    assert r.status_code == 200 and r.json()["result"] == []
    assert not pids_of(demo)  # nothing was run

    def attach(**changes: Any) -> dict[str, Any]:
        return {**demo, **changes}

    for body, param, words in (
        (attach(name="a.b"), "name", "name must be a letter"),
        (attach(command=""), "command", "command must be a non-empty string"),
        (attach(args=["ok", "bad\0arg"]), "args", "args must be a list"),
        (attach(env={"1BAD": "x"}), "env", "env: bad variable '1BAD'"),
    ):
        r = await syscall(mock, "mcp.add", body)
        assert r.status_code == 400, body
        assert r.json()["error"]["param"] == param and words in r.json()["error"]["message"]
    r = await mock.client.post("/v1/mcp", json={"name": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "command"

    r = await mock.client.post("/v1/mcp", json=attach(command="/no/such/program"))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "command"
    assert "cannot run '/no/such/program'" in r.json()["error"]["message"]

    quits = "import sys; sys.stderr.write('missing API key'); sys.exit(2)"
    r = await mock.client.post("/v1/mcp", json=attach(args=["-c", quits]))
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert message.startswith("MCP server 'demo' did not start: the server exited")
    assert message.endswith("its stderr ends: missing API key")

    assert (await mock.client.get("/v1/mcp")).json()["data"] == []  # failures are not kept
    assert (await mock.client.post("/v1/mcp", json=demo)).status_code == 201
    r = await mock.client.post("/v1/mcp", json=demo)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "an MCP server named 'demo' exists"
    # Others see what runs, not its arguments, environment or stderr (secrets live there).
    r = await syscall(mock, "mcp.list", {}, token=users["viewer"])
    [seen] = r.json()["result"]
    assert seen["state"] == "running" and sorted(seen["tools"]) == DEMO_TOOLS
    assert not {"args", "env", "error"} & seen.keys()


async def test_a_server_that_never_answers_is_stopped(mock: MockKernel, tmp_path: Path) -> None:
    mock.kernel.mcp.start_timeout = 1.0
    pid_file = tmp_path / "silent.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    body = {"name": "silent", "command": sys.executable, "args": ["-c", code]}
    r = await mock.client.post("/v1/mcp", json=body)
    assert r.status_code == 502
    assert "no answer to the MCP handshake within 1s" in r.json()["error"]["message"]
    assert gone(int(pid_file.read_text()))


async def test_servers_come_back_with_the_kernel_from_the_database_and_mcp_json(
    tmp_path: Path, demo: dict[str, Any]
) -> None:
    settings = Settings(home=tmp_path / "home", admin_token="adm")
    kernel = Kernel(settings, [MockDevice()])
    await kernel.start()
    admin = kernel.authenticate("adm")
    try:
        await kernel.call("mcp.add", admin, demo)
        await kernel.call("key.rotate", admin)  # the sealed env moves to the new key

        async def resealed() -> bool:
            status = await kernel.call("key.status", admin)
            return bool(status["rows_left"] == 0 and not status["running"])

        await until(resealed)
    finally:
        await kernel.stop()
    raw = kernel.store.path.read_bytes()
    assert b"s3cret-value" not in raw and b"DEMO_SECRET" not in raw  # env is sealed

    config = {
        "mcpServers": {
            "cfg": {"command": sys.executable, "args": demo["args"], "env": demo["env"]},
            "broken": {"args": ["no command"]},
        }
    }
    (settings.home / "mcp.json").write_text(json.dumps(config))
    kernel = Kernel(settings, [MockDevice()])
    await kernel.start()  # servers come up in the background
    try:

        async def up() -> bool:
            states = {s["name"]: s["state"] for s in await kernel.call("mcp.list", admin)}
            return states == {"broken": "invalid", "cfg": "running", "demo": "running"}

        await until(up)
        listing = {s["name"]: s for s in await kernel.call("mcp.list", admin)}
        assert listing["cfg"]["origin"] == "config" and listing["demo"]["origin"] == "api"
        assert listing["broken"]["error"] == (
            "mcp.json: command must be a non-empty string (the program)"
        )
        assert await kernel.tools.call(kernel, admin, "mcp.cfg.add", {"a": 1, "b": 1}) == {
            "text": "2",
            "structured": {"result": 2},
        }
        r = await kernel.tools.call(kernel, admin, "mcp.demo.secret", {})
        assert r["text"] == "s3cret-value"
        with pytest.raises(Forbidden, match=r"defined in .*mcp\.json: remove it there"):
            await kernel.call("mcp.remove", admin, {"name": "cfg"})
    finally:
        await kernel.stop()
    assert len(pids_of(demo)) == 3 and all(gone(pid) for pid in pids_of(demo))


# -- llmos as an MCP server ----------------------------------------------------------
@contextlib.asynccontextmanager
async def llmos_mcp(url: str, token: str, errlog: Path) -> AsyncIterator[ClientSession]:
    """A real MCP client session with `llmos mcp` run as a child process."""
    params = StdioServerParameters(command=str(LLMOS), args=["mcp", "--url", url, "--token", token])
    with errlog.open("w") as log:
        async with (
            stdio_client(params, errlog=log) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def text_of(result: CallToolResult) -> str:
    assert all(isinstance(c, TextContent) for c in result.content)
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


def ok(result: CallToolResult) -> Any:
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content["result"]


async def test_an_mcp_client_makes_syscalls_through_llmos_mcp(
    server: LiveServer, tmp_path: Path
) -> None:
    async with llmos_mcp(server.url, server.token, tmp_path / "mcp.log") as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"sys_info", "proc_list", "proc_spawn", "fs_write", "fs_read", "llm_chat"} <= set(
            tools
        )
        assert "mcp_add" in tools  # an admin's token: the admin's syscalls too
        assert tools["fs_read"].description == "a file's content, current or an older version"
        assert tools["fs_read"].input_schema["required"] == ["path"]

        info = ok(await session.call_tool("sys_info", {}))
        assert info["models"] == ["mock"]
        proc = ok(await session.call_tool("proc_spawn", {"name": "via-mcp"}))
        listed = ok(await session.call_tool("proc_list", {}))
        assert proc["pid"] in [p["pid"] for p in listed]

        written = ok(await session.call_tool("fs_write", {"path": "mcp/a.txt", "content": "hi"}))
        assert written["version"] == 1
        read = ok(await session.call_tool("fs_read", {"path": "mcp/a.txt"}))
        assert read["content"] == "hi"

        messages = [{"role": "user", "content": "hello"}]
        reply = await session.call_tool("llm_chat", {"messages": messages, "max_tokens": 4})
        assert text_of(reply) == ok(reply)["text"] and ok(reply)["usage"]["completion_tokens"] > 0

        bad = await session.call_tool("fs_read", {})
        assert bad.is_error and text_of(bad) == (
            "400 invalid_request_error: path must be a string (field: path)"
        )
        unknown = await session.call_tool("no_such_call", {})
        assert unknown.is_error and "no tool named 'no_such_call'" in text_of(unknown)


async def test_a_viewer_token_sees_only_its_calls_and_is_refused_the_rest(
    server: LiveServer, tmp_path: Path
) -> None:
    with Client(server.url, server.token) as admin:
        viewer = admin.add_user(f"viewer{time.monotonic_ns()}", role="viewer")["token"]
    async with llmos_mcp(server.url, viewer, tmp_path / "mcp.log") as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"sys_info", "proc_list", "fs_read"} <= tools
        assert not {"fs_write", "proc_spawn", "mcp_add", "llm_chat"} & tools
        assert isinstance(ok(await session.call_tool("proc_list", {})), list)
        refused = await session.call_tool("fs_write", {"path": "x.txt", "content": "no"})
        assert refused.is_error
        assert text_of(refused) == (
            "403 permission_error: role 'viewer' may not call fs.write (field: authorization)"
        )


async def test_mcp_both_ways_a_client_reaches_an_attached_server_s_tool(
    server: LiveServer, demo: dict[str, Any], tmp_path: Path
) -> None:
    """MCP client -> llmos mcp -> kernel -> attached MCP server, and back."""
    with Client(server.url, server.token) as admin:
        admin.add_mcp(demo["name"], demo["command"], demo["args"], demo["env"])
    try:
        async with llmos_mcp(server.url, server.token, tmp_path / "mcp.log") as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert tools["tool__mcp_demo_add"].input_schema["required"] == ["a", "b"]
            result = ok(await session.call_tool("tool__mcp_demo_add", {"a": 20, "b": 22}))
            assert result == {"text": "42", "structured": {"result": 42}}
            failed = await session.call_tool("tool__mcp_demo_fail", {"reason": "test"})
            assert failed.is_error
            assert text_of(failed) == (
                "502 tool_error: MCP tool demo.fail failed: "
                "Error executing tool fail: refused: test"
            )
    finally:
        with Client(server.url, server.token) as admin:
            admin.remove_mcp("demo")
    assert all(gone(pid) for pid in pids_of(demo))


def test_llmos_mcp_without_a_kernel_fails_in_one_line() -> None:
    result = CliRunner().invoke(build_app(), ["mcp", "--url", closed_port_url(), "--token", "x"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: cannot reach the llmos kernel at http://127.0.0.1:")
    assert "Traceback" not in result.output


# -- the command line ----------------------------------------------------------------
def llmos(server: LiveServer, *args: str, token: str | None = None) -> Result:
    """`llmos ARGS...` against the live kernel (--url/--token before any `--`)."""
    cut = args.index("--") if "--" in args else len(args)
    auth = ("--url", server.url, "--token", token or server.token)
    return CliRunner().invoke(build_app(), [*args[:cut], *auth, *args[cut:]])


def test_the_tools_commands_attach_list_and_detach(
    server: LiveServer, demo: dict[str, Any]
) -> None:
    env = [f"--env={key}={value}" for key, value in demo["env"].items()]
    result = llmos(server, "tools", "add-mcp", "demo", *env, "--", sys.executable, *demo["args"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["demo: running, 5 tools"] + [
        f"  {name}" for name in DEMO_TOOLS
    ]
    [pid] = pids_of(demo)

    result = llmos(server, "tools", "mcp-ls")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "STATE", "TOOLS", "ORIGIN", "COMMAND"]
    assert row.split()[:5] == ["demo", "running", "5", "api", sys.executable]

    again = llmos(server, "tools", "add-mcp", "demo", "--", sys.executable, *demo["args"])
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert again.stderr == "error: an MCP server named 'demo' exists\n"

    result = llmos(server, "tools", "mcp-restart", "demo")
    assert result.exit_code == 0, result.output
    assert result.stdout == "demo: running, 5 tools\n"
    first, second = pids_of(demo)
    assert first == pid and gone(first) and not gone(second)

    result = llmos(server, "tools", "rm-mcp", "demo")
    assert result.exit_code == 0, result.output
    assert result.stdout == "demo: removed\n" and gone(second)
    result = llmos(server, "tools", "mcp-ls")
    assert result.exit_code == 0 and result.stdout == "no MCP servers attached\n"


def test_the_tools_commands_fail_in_one_line(server: LiveServer, demo: dict[str, Any]) -> None:
    bad_env = llmos(server, "tools", "add-mcp", "demo", "--env", "NOEQUALS", "--", "python")
    assert bad_env.exit_code == 2
    assert bad_env.stderr == "error: --env takes KEY=VALUE, not 'NOEQUALS'\n"

    with Client(server.url, server.token) as admin:
        user = admin.add_user(f"user{time.monotonic_ns()}")["token"]
    args = ("tools", "add-mcp", "demo", "--", sys.executable, *demo["args"])
    refused = llmos(server, *args, token=user)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr == "error: role 'user' may not call mcp.add\n"
    assert not pids_of(demo)

    missing = llmos(server, "tools", "rm-mcp", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no MCP server named 'nope'; attached:")
    cannot = llmos(server, "tools", "add-mcp", "x", "--", "/no/such/program")
    assert cannot.exit_code == 1
    assert cannot.stderr.startswith("error: MCP server 'x' did not start: cannot run")
