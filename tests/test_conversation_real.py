"""Virtual context on the real SmolLM2 with a 512-token window: a conversation ten
times longer than the window goes on without errors, and a fact paged out long ago
is recalled into the prompt when a later turn asks about it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmos.devices import LlamaCppDevice, default_model_path
from llmos.kernel import Done, Kernel, Request
from llmos.params import Settings
from tests.conftest import MODEL

pytestmark = pytest.mark.model

FILLER = (
    "I spent the afternoon sorting old photographs from the attic, labelling each box "
    "with the year and the names of the people in it, and then I made a pot of tea. "
)
TOPICS = ["gardening", "bicycles", "astronomy", "baking", "sailing", "pottery", "chess"]


async def send(k: Kernel, who, pid: int, content: str) -> Request:  # type: ignore[no-untyped-def]
    req: Request = await k.call(
        "conv.send",
        who,
        {"pid": pid, "content": content, "max_tokens": 8, "temperature": 0, "seed": 1},
    )
    while True:
        event = await req.events.get()
        if isinstance(event, Done):
            assert event.error is None, event.error
            return req


async def test_ten_windows_of_conversation_and_recall(tmp_path: Path) -> None:
    device = LlamaCppDevice(default_model_path(), slots=1, ctx=512, threads=2, model=MODEL)
    k = Kernel(Settings(home=tmp_path, admin_token="adm", slots=1, ctx=512), [device])
    await k.start()
    try:
        await converse(k)
    finally:
        await k.stop()


async def converse(k: Kernel) -> None:
    admin = k.authenticate("adm")
    pid = (await k.call("proc.spawn", admin, {"name": "diary"}))["pid"]
    await k.call("conv.core", admin, {"pid": pid, "system": "You are a friendly diary."})
    t0 = time.monotonic()
    await send(k, admin, pid, "Please remember this: the code of my garden shed lock is 7392.")
    for i in range(30):
        await send(k, admin, pid, f"Day {i}: today was about {TOPICS[i % 7]}. " + FILLER * 5)
    history = await k.call("conv.history", admin, {"pid": pid})
    total = sum(t["tokens"] for t in history)
    assert total >= 10 * 512, total  # ten windows of conversation, every turn kept
    assert len(history) == 2 * 31
    await send(k, admin, pid, "What is the code of the lock on my garden shed?")
    view = await k.call("conv.context", admin, {"pid": pid})
    parts = {p["part"]: p for p in view["parts"]}
    assert 0 not in parts["recent_turns"]["turns"]  # the fact's turn left the window...
    recalled = parts["recalled"]["memories"]
    assert any("7392" in m["text"] and m["turn"] == 0 for m in recalled)  # ...and came back
    assert view["prompt_tokens"] + 8 <= 512
    print(f"{len(history)} turns, {total} tokens, {time.monotonic() - t0:.1f} s")
