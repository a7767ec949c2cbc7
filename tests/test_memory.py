"""Long-term memory and kernel-kept conversations on the mock device."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmos.devices import MockDevice
from llmos.errors import InvalidRequest, NotFound
from llmos.kernel import Caller, Done, Kernel, Request
from llmos.params import Settings


async def boot(home: Path, ctx: int = 4096) -> Kernel:
    kernel = Kernel(
        Settings(home=home, admin_token="adm"), [MockDevice(slots=2, context_length=ctx)]
    )
    await kernel.start()
    return kernel


def user(k: Kernel, name: str) -> Caller:
    return k.authenticate(k.tokens.issue(name, "user")[0])


async def test_add_search_update_delete_and_paraphrase(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    alice = user(k, "alice")
    facts = [
        "The capital of France is Paris.",
        "My dog is called Biscuit and loves the beach.",
        "The quarterly report is due on the 14th of March.",
        "Grandma's apple pie needs two cups of sugar.",
    ]
    ids = [(await k.call("mem.add", alice, {"text": f, "tags": ["fact"]}))["id"] for f in facts]
    # phrased differently from the stored fact: no shared keyword but "France"
    hits = await k.call(
        "mem.search", alice, {"query": "Which city is France's seat of government?"}
    )
    assert hits[0]["id"] == ids[0]
    hits = await k.call("mem.search", alice, {"query": "what is my puppy's name", "k": 2})
    assert ids[1] in [h["id"] for h in hits]
    updated = await k.call(
        "mem.update", alice, {"id": ids[2], "text": "The report moved to April."}
    )
    assert updated["text"] == "The report moved to April."
    hits = await k.call("mem.search", alice, {"query": "report April", "k": 1})
    assert hits[0]["id"] == ids[2]
    await k.call("mem.delete", alice, {"id": ids[3]})
    with pytest.raises(NotFound):
        await k.call("mem.get", alice, {"id": ids[3]})
    listed = await k.call("mem.list", alice, {"tag": "fact"})
    assert sorted(m["id"] for m in listed) == sorted(ids[:3])
    for weird in ['"unbalanced', "AND OR NOT", "*", "NEAR(", "'; DROP TABLE memories; --"]:
        await k.call("mem.search", alice, {"query": weird})  # never a syntax error
    with pytest.raises(InvalidRequest):
        await k.call("mem.add", alice, {"text": "  "})
    with pytest.raises(InvalidRequest):
        await k.call("mem.search", alice, {"query": "x", "k": 0})
    await k.stop()


async def test_owners_and_processes_are_isolated(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    alice, bob = user(k, "alice"), user(k, "bob")
    secret = await k.call("mem.add", alice, {"text": "alice's bank PIN is 9921"})
    assert await k.call("mem.search", bob, {"query": "bank PIN"}) == []  # nothing of his
    with pytest.raises(NotFound):
        await k.call("mem.get", bob, {"id": secret["id"]})
    with pytest.raises(NotFound):
        await k.call("mem.delete", bob, {"id": secret["id"]})
    closed = await k.call("proc.spawn", alice, {"name": "closed"})
    open_ = await k.call("proc.spawn", alice, {"name": "open", "memory_shared": True})
    p_closed, p_open = k.authenticate(closed["token"]), k.authenticate(open_["token"])
    own = await k.call("mem.add", p_closed, {"text": "closed process scratch note about whales"})
    assert own["scope"] == "process" and own["pid"] == closed["pid"]
    seen = await k.call("mem.search", p_closed, {"query": "bank PIN"})
    assert secret["id"] not in [m["id"] for m in seen]  # not granted
    assert (await k.call("mem.search", p_open, {"query": "bank PIN"}))[0]["id"] == secret["id"]
    seen = await k.call("mem.search", p_open, {"query": "whales"})
    assert own["id"] not in [m["id"] for m in seen]  # another process's
    with pytest.raises(InvalidRequest):
        await k.call("mem.add", p_closed, {"text": "x", "shared": True})
    shared = await k.call("mem.add", p_open, {"text": "shared fact about owls", "shared": True})
    assert shared["scope"] == "shared"
    # alice (the owner) sees everything in her namespace
    assert len(await k.call("mem.list", alice, {})) == 3
    await k.stop()


async def test_memories_survive_a_restart(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    alice = user(k, "alice")
    token = k.tokens.issue("alice", "user")[0]
    await k.call("mem.add", alice, {"text": "The spare key is under the blue flowerpot."})
    await k.stop()
    k2 = await boot(tmp_path)
    hits = await k2.call("mem.search", k2.authenticate(token), {"query": "where is the spare key"})
    assert hits and "flowerpot" in hits[0]["text"]
    await k2.stop()


async def reply(req: Request) -> str:
    while not isinstance(await req.events.get(), Done):
        pass
    await asyncio.sleep(0)
    return req.text


async def test_conversation_pages_out_and_recalls(tmp_path: Path) -> None:
    k = await boot(tmp_path, ctx=600)  # mock tokens are characters: a tiny window
    alice = user(k, "alice")
    proc = await k.call("proc.spawn", alice, {"name": "chat"})
    pid = proc["pid"]
    await k.call("conv.core", alice, {"pid": pid, "system": "Be brief.", "pinned": ["User: Alice"]})
    send = {"pid": pid, "max_tokens": 20}
    await reply(
        await k.call("conv.send", alice, {**send, "content": "Remember: my locker code is 4812."})
    )
    topics = ["rivers", "mountains", "bread", "chess", "kites", "rain", "copper", "owls"]
    for i in range(30):
        text = f"Tell me about {topics[i % 8]}, turn {i}. " + "Add more detail please. " * 6
        await reply(await k.call("conv.send", alice, {**send, "content": text}))
    history = await k.call("conv.history", alice, {"pid": pid})
    assert len(history) == 62  # every turn kept: user + assistant, 31 times
    assert sum(len(t["content"]) for t in history) > 6 * 600  # far beyond the window
    await reply(
        await k.call("conv.send", alice, {**send, "content": "What is the code for my locker?"})
    )
    view = await k.call("conv.context", alice, {"pid": pid})
    parts = {p["part"]: p for p in view["parts"]}
    assert view["window_start"] > 0 and 0 not in parts["recent_turns"]["turns"]
    assert any("4812" in m["text"] for m in parts["recalled"]["memories"])
    assert view["prompt_tokens"] + 20 <= 600
    assert parts["core"]["pinned"] == 1
    with pytest.raises(InvalidRequest):
        await k.call("conv.send", alice, {"pid": pid, "content": "x" * 2000, "max_tokens": 20})
    bob = user(k, "bob")
    with pytest.raises(NotFound):
        await k.call("conv.context", bob, {"pid": pid})
    await k.stop()


async def test_conversations_and_files_survive_a_restart(tmp_path: Path) -> None:
    k = await boot(tmp_path)
    token = k.tokens.issue("alice", "user")[0]
    alice = k.authenticate(token)
    pid = (await k.call("proc.spawn", alice, {"name": "c"}))["pid"]
    await k.call("conv.core", alice, {"pid": pid, "pinned": ["likes tea"]})
    await reply(await k.call("conv.send", alice, {"pid": pid, "content": "hi", "max_tokens": 5}))
    await k.call("fs.write", alice, {"path": "notes/a.txt", "content": "kept across restarts"})
    await k.stop()
    k2 = await boot(tmp_path)
    alice2 = k2.authenticate(token)
    assert len(await k2.call("conv.history", alice2, {"pid": pid})) == 2
    assert (await k2.call("conv.core", alice2, {"pid": pid}))["pinned"] == ["likes tea"]
    assert (await k2.call("conv.context", alice2, {"pid": pid}))["parts"]
    read = await k2.call("fs.read", alice2, {"path": "notes/a.txt"})
    assert read["content"] == "kept across restarts"
    await reply(
        await k2.call("conv.send", alice2, {"pid": pid, "content": "again", "max_tokens": 5})
    )
    assert len(await k2.call("conv.history", alice2, {"pid": pid})) == 4
    await k2.stop()
