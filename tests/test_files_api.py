"""Files over HTTP (the mock kernel in-process), through the SDK and the CLI (a
live kernel on the mock device): every route, every bad path a 4xx naming the field.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from click.testing import Result
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import LlmosError
from llmos.kernel import Caller, Kernel
from llmos.kernel.storage import FileStore
from llmos.params import Settings
from llmos.sdk import ApiError, AsyncClient, Client
from tests._live_server import LiveServer
from tests.conftest import ADMIN


class Api:
    def __init__(self, kernel: Kernel, client: httpx.AsyncClient) -> None:
        self.kernel = kernel
        self.client = client

    def user(self, owner: str) -> dict[str, str]:
        token, _ = self.kernel.tokens.issue(owner, "user")
        return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(home=tmp_path, admin_token=ADMIN, max_body_bytes=64 * 1024)
    kernel = Kernel(settings, [MockDevice(slots=2, context_length=256, token_delay=0.001)])
    await kernel.start()
    app = create_app(kernel, manage_kernel=False)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=headers
    ) as client:
        yield Api(kernel, client)
    await kernel.stop()


def assert_error(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["param"] == param, error
    assert error["message"]
    return error


# -- HTTP routes -------------------------------------------------------------------
async def test_put_get_raw_bytes_with_version_headers(api: Api) -> None:
    blob = bytes(range(256)) * 8
    r = await api.client.put("/v1/files/data/blob.bin", content=blob)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["path"] == "data/blob.bin"
    assert info["size"] == len(blob)
    assert info["sha256"] == hashlib.sha256(blob).hexdigest()

    r = await api.client.get("/v1/files/data/blob.bin")
    assert r.status_code == 200
    assert r.content == blob
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-llmos-version"] == "1"
    assert r.headers["x-llmos-sha256"] == info["sha256"]
    assert r.headers["etag"] == f'"{info["sha256"]}"'


async def test_versions_rollback_delete_over_http(api: Api) -> None:
    c = api.client
    await c.put("/v1/files/notes/plan.md", content=b"first draft")
    await c.put("/v1/files/notes/plan.md", content=b"second draft")
    r = await c.get("/v1/files/notes/plan.md", params={"version": 1})
    assert (r.content, r.headers["x-llmos-version"]) == (b"first draft", "1")

    r = await c.get("/v1/files-versions/notes/plan.md")
    assert r.json()["object"] == "list"
    assert [v["version"] for v in r.json()["data"]] == [1, 2]

    r = await c.delete("/v1/files/notes/plan.md")
    assert r.status_code == 200
    assert r.json()["deleted"] is True
    assert_error(await c.get("/v1/files/notes/plan.md"), 404, "path")
    assert_error(await c.get("/v1/files-meta/notes/plan.md"), 404, "path")
    assert_error(await c.get("/v1/files/notes/plan.md", params={"version": 3}), 404, "version")

    r = await c.post("/v1/files-rollback/notes/plan.md", json={"version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["restored_from"]) == (4, 1)
    assert (await c.get("/v1/files/notes/plan.md")).content == b"first draft"
    meta = (await c.get("/v1/files-meta/notes/plan.md")).json()
    assert (meta["version"], meta["size"]) == (4, len(b"first draft"))


async def test_list_and_search_over_http(api: Api) -> None:
    c = api.client
    await c.put("/v1/files/notes/a.md", content=b"llamas graze on the hill")
    await c.put("/v1/files/notes/b.md", content=b"llamas llamas everywhere")
    await c.put("/v1/files/todo.txt", content=b"feed the llamas")
    r = await c.get("/v1/files")
    assert [f["path"] for f in r.json()["data"]] == ["notes/a.md", "notes/b.md", "todo.txt"]
    r = await c.get("/v1/files", params={"prefix": "notes/"})
    assert [f["path"] for f in r.json()["data"]] == ["notes/a.md", "notes/b.md"]

    r = await c.get("/v1/files-search", params={"q": "llamas", "limit": 2})
    hits = r.json()["data"]
    assert len(hits) == 2
    assert hits[0]["path"] == "notes/b.md"  # most mentions in the fewest words
    assert "**llamas**" in hits[0]["snippet"]
    for weird in ('"llamas', "AND OR", "NEAR(", "llam*", "-", "*"):
        r = await c.get("/v1/files-search", params={"q": weird})
        assert r.status_code == 200, (weird, r.text)


async def test_url_encoded_paths_arrive_as_given(api: Api) -> None:
    c = api.client
    r = await c.put("/v1/files/caf%C3%A9/na%20me%3F%23.txt", content=b"x")
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "café/na me?#.txt"
    assert (await c.get("/v1/files/caf%C3%A9/na%20me%3F%23.txt")).content == b"x"


# Raw URL paths (already percent-encoded, so no client resolves `..` on the way).
BAD_URL_PATHS = [
    "%2E%2E/x",
    "/etc/passwd",
    "a/%2E%2E/%2E%2E/b",
    "a/..%2F..%2Fb",
    "a//b",
    "a/",
    "a%5Cb",
    "a%00b",
    "a%0Ab",
    "%2E",
    "a/%2E/b",
    "",
    "x" * 2000,
    "a/" + "y" * 256,
]


@pytest.mark.parametrize("raw", BAD_URL_PATHS, ids=repr)
async def test_bad_paths_are_400_naming_path_on_every_route(api: Api, raw: str) -> None:
    c = api.client
    responses = [
        await c.put(f"/v1/files/{raw}", content=b"x"),
        await c.get(f"/v1/files/{raw}"),
        await c.delete(f"/v1/files/{raw}"),
        await c.get(f"/v1/files-meta/{raw}"),
        await c.get(f"/v1/files-versions/{raw}"),
        await c.post(f"/v1/files-rollback/{raw}", json={"version": 1}),
    ]
    for r in responses:
        assert_error(r, 400, "path")
    assert (await c.get("/v1/files")).json()["data"] == []


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "param"),
    [
        ("GET", "/v1/files/f", {"params": {"version": "abc"}}, 400, "version"),
        ("GET", "/v1/files/f", {"params": {"version": 0}}, 400, "version"),
        ("GET", "/v1/files/f", {"params": {"version": 9}}, 404, "version"),
        ("GET", "/v1/files/missing", {}, 404, "path"),
        ("POST", "/v1/files-rollback/f", {"json": {"version": "1"}}, 400, "version"),
        ("POST", "/v1/files-rollback/f", {"json": {"version": True}}, 400, "version"),
        ("POST", "/v1/files-rollback/f", {"json": {"version": -1}}, 400, "version"),
        ("POST", "/v1/files-rollback/f", {"json": {}}, 400, "version"),
        ("POST", "/v1/files-rollback/f", {"content": b"[1]"}, 400, "body"),
        ("POST", "/v1/files-rollback/f", {"content": b"{"}, 400, "body"),
        ("GET", "/v1/files-search", {"params": {"q": ""}}, 400, "q"),
        ("GET", "/v1/files-search", {}, 400, "q"),
        ("GET", "/v1/files-search", {"params": {"q": "x", "limit": 0}}, 400, "limit"),
        ("GET", "/v1/files-search", {"params": {"q": "x", "limit": 101}}, 400, "limit"),
        ("GET", "/v1/files-search", {"params": {"q": "x" * 2000}}, 400, "query"),
        ("GET", "/v1/files", {"params": {"prefix": "a\x00"}}, 400, "prefix"),
    ],
)
async def test_bad_arguments_name_the_field(
    api: Api, method: str, url: str, kwargs: dict[str, Any], status: int, param: str
) -> None:
    await api.client.put("/v1/files/f", content=b"x")
    assert_error(await api.client.request(method, url, **kwargs), status, param)


async def test_oversize_and_quota(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    c = api.client
    r = await c.put("/v1/files/huge", content=b"x" * (64 * 1024 + 1))  # over max_body_bytes
    assert_error(r, 413, "body")
    small = FileStore(
        api.kernel.store.db, keys=api.kernel.keys, max_file_bytes=1000, quota_bytes=1500
    )
    monkeypatch.setattr(api.kernel, "files", small)
    assert_error(await c.put("/v1/files/big", content=b"x" * 1001), 413, "content")
    assert (await c.put("/v1/files/a", content=b"x" * 1000)).status_code == 200
    error = assert_error(await c.put("/v1/files/b", content=b"x" * 501), 403, "quota")
    assert error["code"] == "quota_exceeded"
    assert_error(await c.get("/v1/files/big"), 404, "path")


async def test_auth_and_owner_isolation(api: Api) -> None:
    c = api.client
    alice, bob = api.user("alice"), api.user("bob")
    assert_error(await c.get("/v1/files", headers={"Authorization": ""}), 401, None)
    r = await c.put("/v1/files/diary.txt", content=b"alice's secret", headers=alice)
    assert r.status_code == 200
    assert_error(await c.get("/v1/files/diary.txt", headers=bob), 404, "path")
    assert_error(await c.get("/v1/files/diary.txt"), 404, "path")  # admin is an owner too
    assert (await c.get("/v1/files", headers=bob)).json()["data"] == []
    r = await c.get("/v1/files-search", params={"q": "secret"}, headers=bob)
    assert r.json()["data"] == []
    assert_error(await c.delete("/v1/files/diary.txt", headers=bob), 404, "path")
    r = await c.put("/v1/files/diary.txt", content=b"bob's own", headers=bob)
    assert r.json()["version"] == 1
    assert (await c.get("/v1/files/diary.txt", headers=alice)).content == b"alice's secret"


async def test_a_process_acts_for_its_owner_until_killed(api: Api) -> None:
    c = api.client
    alice = api.user("alice")
    proc = (await c.post("/v1/processes", json={"name": "agent"}, headers=alice)).json()
    agent = {"Authorization": f"Bearer {proc['token']}"}
    assert (await c.put("/v1/files/out.txt", content=b"done", headers=agent)).status_code == 200
    assert (await c.get("/v1/files/out.txt", headers=alice)).content == b"done"
    await c.delete(f"/v1/processes/{proc['pid']}", headers=alice)
    assert_error(await c.put("/v1/files/out.txt", content=b"more", headers=agent), 409, "pid")
    assert_error(await c.get("/v1/files/out.txt", headers=agent), 409, "pid")


# -- the syscalls themselves -------------------------------------------------------
async def test_syscall_arguments_are_checked(api: Api) -> None:
    k = api.kernel
    who = Caller("t", "alice", "user")
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("fs.write", {"path": 5, "content": "x"}, "path"),
        ("fs.write", {"path": "f"}, "content"),
        ("fs.write", {"path": "f", "content": "x", "content_b64": "eA=="}, "content"),
        ("fs.write", {"path": "f", "content": 5}, "content"),
        ("fs.write", {"path": "f", "content": "\ud800"}, "content"),
        ("fs.write", {"path": "f", "content_b64": "not base64!"}, "content_b64"),
        ("fs.write", {"path": "f", "content_b64": 5}, "content_b64"),
        ("fs.write", {"path": "../f", "content": "x"}, "path"),
        ("fs.read", {}, "path"),
        ("fs.read", {"path": "f", "version": "1"}, "version"),
        ("fs.read", {"path": "f", "version": 1.0}, "version"),
        ("fs.rollback", {"path": "f"}, "version"),
        ("fs.rollback", {"path": "f", "version": 0}, "version"),
        ("fs.list", {"prefix": 5}, "prefix"),
        ("fs.search", {"query": 5}, "query"),
        ("fs.search", {"query": "x", "limit": "5"}, "limit"),
    ]
    for name, args, param in cases:
        with pytest.raises(LlmosError) as e:
            await k.call(name, who, args)
        assert (e.value.status, e.value.param) == (400, param), (name, args, e.value)


async def test_syscall_results_are_json(api: Api) -> None:
    k = api.kernel
    who = Caller("t", "alice", "user")
    await k.call("fs.write", who, {"path": "t.txt", "content": "héllo"})
    await k.call("fs.write", who, {"path": "b.bin", "content_b64": "/w=="})
    text = await k.call("fs.read", who, {"path": "t.txt"})
    assert text["content"] == "héllo"
    assert base64.b64decode(text["content_b64"]) == "héllo".encode()
    binary = await k.call("fs.read", who, {"path": "b.bin"})
    assert (binary["content"], binary["content_b64"], binary["size"]) == (None, "/w==", 1)
    assert [f["path"] for f in await k.call("fs.list", who, {})] == ["b.bin", "t.txt"]
    assert [h["path"] for h in await k.call("fs.search", who, {"query": "héllo"})] == ["t.txt"]


# -- SDK and CLI against a live kernel ---------------------------------------------
@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.token) as c:
        yield c
        for f in c.fs_list():
            c.fs_delete(f["path"])


def test_sdk_round_trip(client: Client) -> None:
    info = client.fs_write("sdk/notes.md", "remember the milk")
    assert (info["path"], info["version"]) == ("sdk/notes.md", 1)
    client.fs_write("sdk/notes.md", b"remember the eggs")
    client.fs_write("sdk/blob", bytes(range(256)))
    assert client.fs_read("sdk/notes.md") == b"remember the eggs"
    assert client.fs_read("sdk/notes.md", version=1) == b"remember the milk"
    assert client.fs_read("sdk/blob") == bytes(range(256))
    assert [f["path"] for f in client.fs_list("sdk/")] == ["sdk/blob", "sdk/notes.md"]
    assert client.fs_stat("sdk/notes.md")["version"] == 2
    assert [h["path"] for h in client.fs_search("eggs")] == ["sdk/notes.md"]
    assert client.fs_delete("sdk/notes.md")["deleted"] is True
    assert [v["deleted"] for v in client.fs_versions("sdk/notes.md")] == [False, False, True]
    assert client.fs_rollback("sdk/notes.md", 1)["version"] == 4
    assert client.fs_read("sdk/notes.md") == b"remember the milk"


def test_sdk_sends_paths_verbatim(client: Client) -> None:
    """`a/../b` must be refused, not quietly resolved to `b` by the HTTP client."""
    weird = "dir with space/ü?#%2E&x=1.txt"
    client.fs_write(weird, "ok")
    assert client.fs_read(weird) == b"ok"
    for bad in ("a/../b", "../b", "..", ".", "a/./b", "/etc/passwd", "a//b", "a\\b", "a\x00b"):
        with pytest.raises(ApiError) as e:
            client.fs_write(bad, "x")
        assert (e.value.status, e.value.param) == (400, "path"), bad
    with pytest.raises(ApiError) as e:
        client.fs_write("a\ud800", "x")
    assert (e.value.status, e.value.param) == (400, "path")
    assert [f["path"] for f in client.fs_list()] == [weird]


def test_sdk_errors(client: Client) -> None:
    with pytest.raises(ApiError) as e:
        client.fs_read("missing")
    assert (e.value.status, e.value.param) == (404, "path")
    client.fs_write("f", "x")
    with pytest.raises(ApiError) as e:
        client.fs_read("f", version=5)
    assert (e.value.status, e.value.param) == (404, "version")
    with pytest.raises(ApiError) as e:
        client.fs_search("")
    assert (e.value.status, e.value.param) == (400, "q")


async def test_async_sdk_round_trip(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as c:
        await c.fs_write("async/a.txt", "asynchronous hello")
        await c.fs_write("async/a.txt", b"asynchronous goodbye")
        assert await c.fs_read("async/a.txt") == b"asynchronous goodbye"
        assert await c.fs_read("async/a.txt", 1) == b"asynchronous hello"
        assert [f["path"] for f in await c.fs_list("async/")] == ["async/a.txt"]
        assert (await c.fs_stat("async/a.txt"))["version"] == 2
        assert [h["path"] for h in await c.fs_search("goodbye", limit=5)] == ["async/a.txt"]
        await c.fs_delete("async/a.txt")
        assert len(await c.fs_versions("async/a.txt")) == 3
        assert (await c.fs_rollback("async/a.txt", 2))["restored_from"] == 2
        with pytest.raises(ApiError) as e:
            await c.fs_stat("async/../x")
        assert (e.value.status, e.value.param) == (400, "path")
        await c.fs_delete("async/a.txt")


def fs_cli(server: LiveServer, *args: str, input: bytes | None = None) -> Result:
    argv = ["fs", *args, "--url", server.url, "--token", server.token]
    return CliRunner().invoke(build_app(), argv, input=input)


def test_cli_put_ls_get_stat(server: LiveServer, client: Client, tmp_path: Path) -> None:
    local = tmp_path / "report.md"
    local.write_bytes(b"# Quarterly report\nllamas up 12%\n")
    result = fs_cli(server, "put", str(local), "docs/report.md")
    assert result.exit_code == 0, result.output
    assert result.stdout == "docs/report.md: version 1, 33 bytes\n"
    result = fs_cli(server, "put", str(local))  # PATH defaults to the file's name
    assert result.stdout.startswith("report.md: version 1")
    result = fs_cli(server, "put", "-", "stdin.txt", input=b"from stdin")
    assert result.exit_code == 0, result.output

    result = fs_cli(server, "ls", "docs/")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["PATH", "SIZE", "VER", "UPDATED"]
    assert rows[1][:3] == ["docs/report.md", "33", "1"]
    assert len(rows) == 2

    result = fs_cli(server, "get", "docs/report.md")
    assert result.stdout_bytes == local.read_bytes()
    out = tmp_path / "copy.md"
    result = fs_cli(server, "get", "stdin.txt", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"from stdin"

    result = fs_cli(server, "stat", "docs/report.md")
    assert "sha256" in result.stdout
    assert hashlib.sha256(local.read_bytes()).hexdigest() in result.stdout


def test_cli_history_and_search(server: LiveServer, client: Client) -> None:
    client.fs_write("plan.txt", "plan A: [bold]storm[/] the castle")
    client.fs_write("plan.txt", "plan B: retreat")
    result = fs_cli(server, "rm", "plan.txt")
    assert result.stdout == "deleted plan.txt (version 3 is the deletion)\n"
    result = fs_cli(server, "versions", "plan.txt")
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["VER", "1", "2", "3"]
    assert "(deleted)" in lines[3]
    result = fs_cli(server, "rollback", "plan.txt", "1")
    assert result.stdout == "plan.txt: version 4 has version 1's content\n"
    result = fs_cli(server, "get", "plan.txt", "--version", "2")
    assert result.stdout == "plan B: retreat"

    result = fs_cli(server, "search", "castle")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "plan.txt  (version 4)"
    assert "[bold]**storm**[/]" not in result.stdout  # markup shown as text, not applied
    assert "[bold]storm[/]" in result.stdout.replace("**", "")
    assert fs_cli(server, "search", "nothing-like-it").stdout == "no matches\n"
    assert fs_cli(server, "ls", "zzz/").stdout == "no files under 'zzz/'\n"


def test_cli_errors_are_one_line(server: LiveServer, tmp_path: Path) -> None:
    for args in (("get", "missing"), ("rm", "../x"), ("rollback", "a//b", "1")):
        result = fs_cli(server, *args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: "), result.stderr
        assert "Traceback" not in result.output
    result = fs_cli(server, "put", str(tmp_path / "no-such-file"), "x")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read")
    result = fs_cli(server, "put", "-")
    assert result.exit_code == 2
    assert fs_cli(server, "get", "x", "--version", "abc").exit_code == 2
