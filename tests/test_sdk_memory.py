"""The SDK's memory and kernel-kept conversation methods, against a live kernel on
the mock device (its tokens are characters), plus request bodies through httpx's
transport seam."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from llmos.params import DEFAULT_PRIORITY
from llmos.sdk import ApiError, AsyncClient, ChatResult, Client
from tests._live_server import MODEL, LiveServer

PARTS = ["core", "recent_turns", "recalled", "new_turn"]


@pytest.fixture
def bob(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.kernel.tokens.issue("bob", "user")[0]) as c:
        yield c


# -- memory ------------------------------------------------------------------------
def test_memory_round_trip(client: Client) -> None:
    added = client.mem_add(
        "The spare key is under the blue flowerpot.",
        tags=["home", "rt"],
        meta={"source": "test"},
    )
    other = client.mem_add("Quarterly report is due on the 14th of March.", tags=["rt"])
    mid = added["id"]
    assert (added["scope"], added["pid"]) == ("shared", None)
    assert (added["tags"], added["meta"]) == (["home", "rt"], {"source": "test"})
    assert client.mem_get(mid) == added

    hits = client.mem_search("where is the spare key", k=1, tag="rt")
    assert [h["id"] for h in hits] == [mid]
    assert isinstance(hits[0]["score"], float)

    updated = client.mem_update(mid, text="The spare key is now with the neighbour.")
    assert updated["text"] == "The spare key is now with the neighbour."
    assert updated["tags"] == ["home", "rt"]  # what was not sent is kept
    assert client.mem_update(mid, tags=["rt"], meta={})["tags"] == ["rt"]
    assert client.mem_get(mid)["meta"] == {}

    assert [m["id"] for m in client.mem_list(tag="rt")] == [other["id"], mid]  # newest first
    assert [m["id"] for m in client.mem_list(tag="rt", limit=1, offset=1)] == [mid]

    assert client.mem_delete(mid)["deleted"] is True
    with pytest.raises(ApiError) as e:
        client.mem_get(mid)
    assert (e.value.status, e.value.param) == (404, "id")
    assert f"no memory with id {mid}" in e.value.message
    assert [m["id"] for m in client.mem_list(tag="rt")] == [other["id"]]


def test_memory_arguments_are_checked(client: Client) -> None:
    for call in (
        lambda: client.mem_add(""),
        lambda: client.mem_search("x", k=0),
        lambda: client.mem_search("x", k=101),
        lambda: client.mem_list(limit=0),
    ):
        with pytest.raises(ApiError) as e:
            call()
        assert 400 <= e.value.status < 500


def test_users_do_not_see_each_others_memories(client: Client, bob: Client) -> None:
    secret = client.mem_add("admin's bank PIN is 9921", tags=["iso"])
    bobs = bob.mem_add("bob's locker code is 4812", tags=["iso"])
    assert secret["owner"] != bobs["owner"]
    assert secret["id"] not in [h["id"] for h in bob.mem_search("bank PIN", k=100)]
    assert [m["id"] for m in bob.mem_list(tag="iso")] == [bobs["id"]]
    assert [m["id"] for m in client.mem_list(tag="iso")] == [secret["id"]]
    for call in (bob.mem_get, bob.mem_delete, lambda mid: bob.mem_update(mid, text="mine")):
        with pytest.raises(ApiError) as e:
            call(secret["id"])
        assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        client.mem_get(bobs["id"])
    assert e.value.status == 404
    assert client.mem_get(secret["id"])["text"] == "admin's bank PIN is 9921"


def test_process_memories_and_the_shared_grant(server: LiveServer, client: Client) -> None:
    closed = client.spawn("mem-closed")
    open_ = client.spawn("mem-open", memory_shared=True)
    assert (closed["memory_shared"], open_["memory_shared"]) == (False, True)
    owners = client.mem_add("the owner's shared note about owls", tags=["grant"])
    for_closed = client.mem_add("scratch for the closed one", tags=["grant"], pid=closed["pid"])
    assert (for_closed["scope"], for_closed["pid"]) == ("process", closed["pid"])
    with Client(server.url, closed["token"]) as p_closed, Client(server.url, open_["token"]) as p:
        assert [m["id"] for m in p_closed.mem_list(tag="grant")] == [for_closed["id"]]
        with pytest.raises(ApiError) as e:
            p_closed.mem_add("x", shared=True)
        assert (e.value.status, e.value.param) == (400, "shared")
        assert [m["id"] for m in p.mem_list(tag="grant")] == [owners["id"]]
        own = p.mem_add("open process scratch", tags=["grant"])
        shared = p.mem_add("open process, for the owner", tags=["grant"], shared=True)
        assert (own["scope"], own["pid"]) == ("process", open_["pid"])
        assert (shared["scope"], shared["pid"]) == ("shared", None)
    assert len(client.mem_list(tag="grant")) == 4  # the owner sees its whole namespace


# -- kernel-kept conversations -----------------------------------------------------
def test_a_kernel_kept_conversation(client: Client) -> None:
    pid = client.spawn("talker")["pid"]
    assert client.history(pid) == []
    assert client.context(pid)["parts"] == []
    core = client.set_core(pid, system="Be brief.", pinned=["User: Alice"])
    assert (core["system"], core["pinned"]) == ("Be brief.", ["User: Alice"])
    assert client.set_core(pid, pinned=["User: Alice", "Likes tea"])["system"] == "Be brief."
    assert client.core(pid)["pinned"] == ["User: Alice", "Likes tea"]

    replies = [
        client.send(pid, text, max_tokens=4, temperature=0.0)
        for text in ("hello", "how are you?", "tell me more")
    ]
    assert all(isinstance(r, ChatResult) and len(r.text) == 4 for r in replies)
    assert [r.usage["completion_tokens"] for r in replies] == [4, 4, 4]
    assert replies[2].raw["model"] == MODEL

    history = client.history(pid)
    assert [t["idx"] for t in history] == list(range(6))
    assert [t["role"] for t in history] == ["user", "assistant"] * 3
    assert [t["content"] for t in history[::2]] == ["hello", "how are you?", "tell me more"]
    assert [t["content"] for t in history[1::2]] == [r.text for r in replies]

    view = client.context(pid)
    assert view["pid"] == pid
    assert view["max_tokens"] == 4
    assert view["budget"] == view["context_length"] - 4
    assert view["prompt_tokens"] == replies[2].usage["prompt_tokens"]
    parts = {p["part"]: p for p in view["parts"]}
    assert [p["part"] for p in view["parts"]] == PARTS
    assert parts["core"]["pinned"] == 2
    assert parts["recent_turns"]["turns"] == [0, 1, 2, 3]  # everything fits the window
    assert parts["new_turn"]["turn"] == 4


def test_streamed_send_is_kept_like_any_other_turn(client: Client) -> None:
    pid = client.spawn("streamer")["pid"]
    deltas = list(client.send_stream(pid, "count to ten", max_tokens=8, seed=1, stop=["\x00"]))
    assert len(deltas) >= 2
    reply = "".join(deltas)
    assert len(reply) == 8
    second = "".join(client.send_stream(pid, "again", max_tokens=3))
    history = client.history(pid)
    assert [t["content"] for t in history] == ["count to ten", reply, "again", second]
    assert client.context(pid)["parts"][1]["turns"] == [0, 1]


def test_conversation_errors(client: Client, bob: Client) -> None:
    pid = client.spawn("private")["pid"]
    with pytest.raises(ApiError) as e:
        bob.send(pid, "hi", max_tokens=2)
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        list(bob.send_stream(pid, "hi", max_tokens=2))
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        bob.context(pid)
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        client.send(pid, "hi", max_tokens=100_000)  # no room left for the conversation
    assert (e.value.status, e.value.param) == (400, "max_tokens")
    client.kill(pid)
    with pytest.raises(ApiError) as e:
        client.send(pid, "hi", max_tokens=2)
    assert 400 <= e.value.status < 500


async def test_async_client(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as c:
        added = await c.mem_add("asynchronous facts about herons", tags=["async"])
        assert (await c.mem_get(added["id"]))["text"] == added["text"]
        hits = await c.mem_search("herons", k=1, tag="async")
        assert [h["id"] for h in hits] == [added["id"]]
        assert (await c.mem_update(added["id"], tags=["async", "birds"]))["tags"][1] == "birds"
        assert [m["id"] for m in await c.mem_list(tag="birds")] == [added["id"]]
        await c.mem_delete(added["id"])
        assert await c.mem_list(tag="async") == []

        pid = (await c.spawn("async-talker", memory_shared=True))["pid"]
        await c.set_core(pid, system="Be brief.")
        assert (await c.core(pid))["system"] == "Be brief."
        first = await c.send(pid, "hello", max_tokens=3)
        deltas = [d async for d in c.send_stream(pid, "more", max_tokens=5)]
        assert len(first.text) == 3 and len("".join(deltas)) == 5
        history = await c.history(pid)
        assert [t["content"] for t in history] == ["hello", first.text, "more", "".join(deltas)]
        view = await c.context(pid)
        assert [p["part"] for p in view["parts"]] == PARTS
        with pytest.raises(ApiError) as e:
            await c.mem_get(added["id"])
        assert e.value.status == 404


# -- request bodies ----------------------------------------------------------------
def test_only_what_is_set_is_sent() -> None:
    sent: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else request.url.query.decode()
        sent.append((request.method, request.url.path, body))
        if request.url.path.endswith("/messages"):
            reply = {"id": "x", "choices": [{"message": {"content": "ok"}}], "usage": {}}
            return httpx.Response(200, json=reply)
        return httpx.Response(200, json={"object": "list", "data": []})

    with Client("http://kernel", "t", transport=httpx.MockTransport(handler)) as c:
        assert c.send(3, "hi", max_tokens=5, stop=("a", "b")).text == "ok"
        c.mem_update(7, tags=("x",))
        c.mem_add("note", pid=3)
        c.mem_search("q")
        c.set_core(3, pinned=[])
        c.spawn("p")
        c.spawn("q", memory_shared=True)
        c.mem_list(tag="t", limit=2)
    assert sent == [
        (
            "POST",
            "/v1/processes/3/messages",
            {"max_tokens": 5, "stop": ["a", "b"], "content": "hi"},
        ),
        ("PATCH", "/v1/memories/7", {"tags": ["x"]}),
        ("POST", "/v1/memories", {"text": "note", "pid": 3}),
        ("POST", "/v1/memories/search", {"query": "q", "k": 5}),
        ("PUT", "/v1/processes/3/core", {"pinned": []}),
        ("POST", "/v1/processes", {"name": "p", "priority": DEFAULT_PRIORITY}),
        (
            "POST",
            "/v1/processes",
            {"name": "q", "priority": DEFAULT_PRIORITY, "memory_shared": True},
        ),
        ("GET", "/v1/memories", "limit=2&offset=0&tag=t"),
    ]
