"""Tools: the registry's syscalls, the built-ins, their access rules, concurrency,
and the HTTP routes, SDK and CLI over them. (The python tool's sandbox against
hostile code: tests/test_sandbox.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import Result
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Forbidden, InvalidRequest, Killed, LlmosError, NotFound
from llmos.kernel import Caller, Kernel
from llmos.kernel.tools import Tool
from llmos.params import Settings
from llmos.sdk import ApiError, AsyncClient, Client
from tests._live_server import LiveServer
from tests.conftest import MockKernel

BUILTINS = ["calculator", "file_list", "file_read", "file_write", "memory_search", "python", "time"]


@dataclass
class World:
    k: Kernel
    admin: Caller
    alice: Caller
    bob: Caller
    vera: Caller  # a viewer

    async def tool(self, who: Caller, name: str, **arguments: Any) -> Any:
        return await self.k.call("tool.call", who, {"name": name, "arguments": arguments})

    async def spawn(self, who: Caller, caps: dict[str, Any] | None = None) -> Caller:
        args: dict[str, Any] = {"name": "agent"}
        if caps is not None:
            args["capabilities"] = caps
        spawned = await self.k.call("proc.spawn", who, args)
        return self.k.authenticate(spawned["token"])


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    k = Kernel(Settings(home=tmp_path, admin_token="adm"), [MockDevice(slots=2)])
    await k.start()
    admin = k.authenticate("adm")
    who = {}
    for name, role in [("alice", "user"), ("bob", "user"), ("vera", "viewer")]:
        made = await k.call("user.add", admin, {"name": name, "role": role})
        who[name] = k.authenticate(made["token"])
    yield World(k, admin, who["alice"], who["bob"], who["vera"])
    await k.stop()


async def _error(call: Any) -> LlmosError:
    with pytest.raises(LlmosError) as caught:
        await call
    return caught.value


# -- the registry's syscalls -------------------------------------------------------
async def test_tool_list_names_the_builtins_with_their_schemas(world: World) -> None:
    tools = await world.k.call("tool.list", world.vera, {})  # a viewer may look
    assert [t["name"] for t in tools] == BUILTINS
    by_name = {t["name"]: t for t in tools}
    assert by_name["calculator"]["parameters"]["required"] == ["expression"]
    assert set(by_name["python"]["parameters"]["properties"]) == {"code", "timeout_s"}
    assert set(by_name["memory_search"]["parameters"]["properties"]) == {"query", "k"}
    assert all(t["source"] == "builtin" and t["description"] for t in tools)


async def test_bad_calls_name_the_field(world: World) -> None:
    cases: list[tuple[dict[str, Any], type[LlmosError], str]] = [
        ({"name": "teleport"}, NotFound, "name"),
        ({"arguments": {}}, InvalidRequest, "name"),
        ({"name": "calculator", "arguments": {}}, InvalidRequest, "arguments"),
        ({"name": "calculator", "arguments": [1]}, InvalidRequest, "arguments"),
        ({"name": "calculator", "arguments": "{not json"}, InvalidRequest, "arguments"),
        ({"name": "file_read", "arguments": {"path": 7}}, InvalidRequest, "arguments.path"),
        ({"name": "file_read", "arguments": {"path": "a", "x": 1}}, InvalidRequest, "arguments"),
        ({"name": "memory_search", "arguments": {"query": "q", "k": 0}},
         InvalidRequest, "arguments.k"),
        ({"name": "python", "arguments": {"code": "1", "timeout_s": 600}},
         InvalidRequest, "arguments.timeout_s"),
    ]  # fmt: skip
    for args, kind, param in cases:
        error = await _error(world.k.call("tool.call", world.alice, args))
        assert isinstance(error, kind) and error.param == param, (args, error)
    # a viewer reads the list but calls nothing
    error = await _error(world.tool(world.vera, "time"))
    assert isinstance(error, Forbidden)


async def test_arguments_may_come_as_a_json_string(world: World) -> None:
    args = {"name": "calculator", "arguments": '{"expression": "6*7"}'}
    assert (await world.k.call("tool.call", world.alice, args))["result"] == 42


# -- the built-ins -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 ** 2", -4),
        ("2 ** 3 ** 2", 512),
        ("7 // 2 + 7 % 2", 4),
        ("7 / 2", 3.5),
        ("sqrt(16) + abs(-2)", 6.0),
        ("log(8, 2)", 3.0),
        ("round(pi, 2)", 3.14),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("1e3 + 0.5", 1000.5),
        ("+".join(["1"] * 400), 400),  # long, not deep
    ],
)
async def test_calculator_computes(world: World, expression: str, value: float) -> None:
    result = await world.tool(world.alice, "calculator", expression=expression)
    assert result == {"expression": expression, "result": value}


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("__import__('os').system('id')", "unknown function"),
        ("().__class__.__bases__", "not allowed"),
        ("open('/etc/passwd')", "unknown function"),
        ("x + 1", "unknown name"),
        ("'a' * 3", "not a number"),
        ("[1, 2]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 if 1 else 2", "not allowed"),
        ("1 < 2", "not allowed"),
        ("9 ** 9 ** 9", "bits"),
        ("10 ** 400 / 3", "too large"),
        ("1e308 * 10", "finite"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "math"),
        ("(-8) ** (1 / 3)", "real"),
        ("-" * 300 + "1", "nested"),
        ("(" * 300 + "1" + ")" * 300, "not an arithmetic expression"),
        ("1 +", "not an arithmetic expression"),
        ("", "empty"),
        ("1" * 1001, "too long"),  # the schema's maxLength
    ],
)
async def test_calculator_refuses_with_a_clear_400(
    world: World, expression: str, says: str
) -> None:
    error = await _error(world.tool(world.alice, "calculator", expression=expression))
    assert isinstance(error, InvalidRequest)
    assert error.param in ("arguments.expression", "arguments")
    assert says in error.message


async def test_time_in_utc_and_in_a_zone(world: World) -> None:
    utc = await world.tool(world.alice, "time")
    assert utc["timezone"] == "UTC" and datetime.fromisoformat(utc["utc"]).utcoffset() is not None
    paris = await world.tool(world.alice, "time", timezone="Europe/Paris")
    local = datetime.fromisoformat(paris["local"])
    assert local.utcoffset() is not None and local.utcoffset().total_seconds() in (3600, 7200)
    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", "", "America"):
        error = await _error(world.tool(world.alice, "time", timezone=bad))
        assert isinstance(error, InvalidRequest) and error.param == "arguments.timezone", bad


async def test_files_through_tools_are_the_callers_own(world: World) -> None:
    info = await world.tool(world.alice, "file_write", path="notes/a.md", content="alice's")
    assert info["version"] == 1
    got = await world.tool(world.alice, "file_read", path="notes/a.md")
    assert got == {"path": "notes/a.md", "version": 1, "size": 7, "content": "alice's"}
    listed = await world.tool(world.alice, "file_list", prefix="notes")
    assert [f["path"] for f in listed] == ["notes/a.md"]
    # bob's namespace is his own: alice's file is not there, and his is not hers
    error = await _error(world.tool(world.bob, "file_read", path="notes/a.md"))
    assert isinstance(error, NotFound) and error.param == "arguments.path"
    await world.k.call("fs.write", world.bob, {"path": "secret.md", "content": "bob's"})
    error = await _error(world.tool(world.alice, "file_read", path="secret.md"))
    assert isinstance(error, NotFound)
    assert await world.tool(world.alice, "file_list") == listed


async def test_memory_search_finds_the_callers_memories(world: World) -> None:
    await world.k.call("mem.add", world.alice, {"text": "alice likes green tea"})
    await world.k.call("mem.add", world.bob, {"text": "bob likes green tea too"})
    hits = await world.tool(world.alice, "memory_search", query="green tea", k=3)
    assert [h["text"] for h in hits] == ["alice likes green tea"]


# -- access rules: a tool is the syscall it makes ----------------------------------
async def test_a_capability_without_fs_read_cannot_read_through_a_tool(world: World) -> None:
    await world.k.call("fs.write", world.alice, {"path": "proj/plan.md", "content": "ship"})
    await world.k.call("fs.write", world.alice, {"path": "private/d.md", "content": "dear"})
    caps = {"syscalls": ["tool.call", "tool.list", "fs.list"]}
    narrow = await world.spawn(world.alice, caps)
    error = await _error(world.tool(narrow, "file_read", path="proj/plan.md"))
    assert isinstance(error, Forbidden) and error.param == "capabilities"
    assert "fs.read" in error.message
    # the inner denial is audited like any other
    rows = await world.k.call("audit.list", world.admin, {})
    assert any(r["action"] == "fs.read" and r["outcome"] == "denied" for r in rows)
    # a capability limited to proj/ reads proj/ only
    caps = {"syscalls": ["tool.call", "fs.read"], "files": {"read": ["proj"]}}
    proj_only = await world.spawn(world.alice, caps)
    got = await world.tool(proj_only, "file_read", path="proj/plan.md")
    assert got["content"] == "ship"
    error = await _error(world.tool(proj_only, "file_read", path="private/d.md"))
    assert isinstance(error, Forbidden | NotFound)
    # without tool.call, no tool at all
    no_tools = await world.spawn(world.alice, {"syscalls": ["fs.read"]})
    error = await _error(world.tool(no_tools, "calculator", expression="1"))
    assert isinstance(error, Forbidden) and "tool.call" in error.message


async def test_a_killed_process_calls_no_tool(world: World) -> None:
    proc = await world.spawn(world.alice)
    assert (await world.tool(proc, "calculator", expression="1+1"))["result"] == 2
    await world.k.call("proc.kill", world.alice, {"pid": proc.pid})
    error = await _error(world.tool(proc, "calculator", expression="1+1"))
    assert isinstance(error, Killed)


# -- concurrency -------------------------------------------------------------------
async def test_tools_run_concurrently(world: World) -> None:
    """Each slow tool waits until the other has started: under a global lock the
    first would wait forever (and time out here); concurrently both finish."""
    started = {"a": asyncio.Event(), "b": asyncio.Event()}
    order: list[str] = []

    def slow(me: str, other: str) -> Tool:
        async def handler(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
            order.append(f"start {me}")
            started[me].set()
            await asyncio.wait_for(started[other].wait(), timeout=10)
            order.append(f"end {me}")
            return me

        schema = {"type": "object", "properties": {}}
        return Tool(f"slow_{me}", "waits for its twin", schema, handler, source="test")

    world.k.tools.register(slow("a", "b"))
    world.k.tools.register(slow("b", "a"))
    results = await asyncio.gather(
        world.tool(world.alice, "slow_a"), world.tool(world.alice, "slow_b")
    )
    assert results == ["a", "b"]
    assert sorted(order[:2]) == ["start a", "start b"]  # both began before either ended


# -- HTTP --------------------------------------------------------------------------
async def test_tool_routes(mock: MockKernel) -> None:
    listed = (await mock.client.get("/v1/tools")).json()
    assert listed["object"] == "list" and [t["name"] for t in listed["data"]] == BUILTINS
    r = await mock.client.post(
        "/v1/tools/calculator/call", json={"arguments": {"expression": "2**10"}}
    )
    assert r.status_code == 200
    assert r.json() == {
        "object": "tool.result",
        "name": "calculator",
        "result": {"expression": "2**10", "result": 1024},
    }
    r = await mock.client.post("/v1/tools/time/call")  # no body: no arguments
    assert r.status_code == 200 and r.json()["result"]["timezone"] == "UTC"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/tools/teleport/call", {"arguments": {}}, 404, "name"),
        ("/v1/tools/calculator/call", {"arguments": {"expression": "x"}}, 400,
         "arguments.expression"),
        ("/v1/tools/calculator/call", {"arguments": {}}, 400, "arguments"),
        ("/v1/tools/calculator/call", {"arguments": "2+2"}, 400, "arguments"),
        ("/v1/tools/calculator/call", {"args": {}}, 400, "args"),
        ("/v1/tools/calculator/call", [1], 400, "body"),
        ("/v1/tools/file_read/call", {"arguments": {"path": "none.md"}}, 404, "arguments.path"),
    ],
)  # fmt: skip
async def test_tool_route_errors_are_json_naming_the_field(
    mock: MockKernel, path: str, body: Any, status: int, param: str
) -> None:
    r = await mock.client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


# -- SDK ---------------------------------------------------------------------------
def test_sdk_lists_and_calls_tools(server: LiveServer, client: Client) -> None:
    assert [t["name"] for t in client.tools()] == BUILTINS
    assert client.call_tool("calculator", expression="6*7")["result"] == 42
    ran = client.call_tool("python", code="print(sum(range(10)))", timeout_s=20)
    assert ran["stdout"] == "45\n" and ran["exit_code"] == 0
    with pytest.raises(ApiError) as bad:
        client.call_tool("calculator", expression="nope")
    assert bad.value.status == 400 and bad.value.param == "arguments.expression"
    with pytest.raises(ApiError) as missing:
        client.call_tool("teleport")
    assert missing.value.status == 404


async def test_async_sdk_lists_and_calls_tools(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as client:
        assert "python" in [t["name"] for t in await client.tools()]
        results = await asyncio.gather(
            client.call_tool("calculator", expression="2**8"),
            client.call_tool("time", timezone="Asia/Tokyo"),
        )
    assert results[0]["result"] == 256 and results[1]["timezone"] == "Asia/Tokyo"


# -- CLI ---------------------------------------------------------------------------
def cli(server: LiveServer, *args: str) -> Result:
    return CliRunner().invoke(build_app(), [*args, "--url", server.url, "--token", server.token])


def test_cli_lists_tools(server: LiveServer) -> None:
    result = cli(server, "tools", "ls")
    assert result.exit_code == 0, result.output
    for name in BUILTINS:
        assert name in result.stdout
    assert "expression: string" in result.stdout and "timezone?: string" in result.stdout


def test_cli_calls_a_tool(server: LiveServer) -> None:
    result = cli(server, "tools", "call", "calculator", "--arg", "expression=2**10")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"expression": "2**10", "result": 1024}
    # --arg values take the schema's types; --json gives the whole object
    code = json.dumps({"code": "print(6 * 7)"})
    result = cli(server, "tools", "call", "python", "--json", code, "-a", "timeout_s=20")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stdout"] == "42\n"
    result = cli(server, "tools", "call", "memory_search", "-a", "query=tea", "-a", "k=2")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("calculator", "--arg", "expression"), 2, "KEY=VALUE"),
        (("calculator", "--json", "{nope"), 2, "not valid JSON"),
        (("calculator", "--json", "[1]"), 2, "JSON object"),
        (("python", "--arg", "code=1", "--arg", "timeout_s=soon"), 2, "not a number"),
        (("teleport",), 1, "no tool named 'teleport'"),
        (("calculator", "--arg", "expression=1/0"), 1, "division by zero"),
    ],
)
def test_cli_errors_are_one_line(
    server: LiveServer, args: tuple[str, ...], code: int, says: str
) -> None:
    result = cli(server, "tools", "call", *args)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and says in result.stderr
