"""The syscall table over HTTP: list it, make any call with JSON arguments."""

from __future__ import annotations

import pytest

from llmos.sdk import ApiError, Client
from tests._live_server import LiveServer
from tests.conftest import MockKernel


async def test_list_and_call_syscalls(mock: MockKernel) -> None:
    listed = (await mock.client.get("/v1/syscalls")).json()["data"]
    names = {s["name"]: s for s in listed}
    assert names["proc.spawn"]["allowed"] and "doc" in names["proc.spawn"]
    spawned = (await mock.client.post("/v1/syscalls/proc.spawn", json={"name": "w"})).json()
    pid = spawned["result"]["pid"]
    got = (await mock.client.post("/v1/syscalls/proc.get", json={"pid": pid})).json()
    assert got["result"]["name"] == "w"
    chat = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    answer = (await mock.client.post("/v1/syscalls/llm.chat", json=chat)).json()["result"]
    assert answer["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 5
    assert answer["text"]
    # A process token sees which calls its capability allows.
    narrow = {"name": "n", "capabilities": {"syscalls": ["llm.chat"]}}
    token = (await mock.client.post("/v1/processes", json=narrow)).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    mine = (await mock.client.get("/v1/syscalls", headers=auth)).json()["data"]
    assert {s["name"] for s in mine if s["allowed"]} == {"llm.chat"}


async def test_bad_syscalls_are_clear_4xx(mock: MockKernel) -> None:
    r = await mock.client.post("/v1/syscalls/proc.teleport", json={})
    assert r.status_code == 404 and r.json()["error"]["param"] == "syscall"
    r = await mock.client.post("/v1/syscalls/proc.get", json={"pid": "one"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "pid"
    r = await mock.client.post("/v1/syscalls/proc.get", json=[1, 2])
    assert r.status_code == 400
    r = await mock.client.post(
        "/v1/syscalls/proc.list", json={}, headers={"Authorization": "Bearer x"}
    )
    assert r.status_code == 401
    chat = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    r = await mock.client.post("/v1/syscalls/llm.chat", json=chat)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_the_sdk_makes_any_syscall(server: LiveServer) -> None:
    with Client(server.url, server.token) as c:
        assert any(s["name"] == "sys.info" for s in c.syscalls())
        assert c.syscall("sys.info")["models"] == ["mock"]
        with pytest.raises(ApiError) as bad:
            c.syscall("proc.get", {"pid": "x"})
        assert bad.value.status == 400
