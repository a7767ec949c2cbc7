"""Context switches on the real SmolLM2: with greedy sampling, the output with any
number of preemptions is byte-for-byte the output without any."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from llmos.api import create_app
from llmos.devices import LlamaCppDevice, default_model_path
from llmos.kernel import Done, Kernel, Request
from llmos.kernel.policies.base import Policy
from llmos.params import Settings
from tests._live_server import serving
from tests.conftest import MODEL

pytestmark = pytest.mark.model

STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


@pytest_asyncio.fixture
async def one_slot(tmp_path: Path) -> AsyncIterator[Kernel]:
    device = LlamaCppDevice(default_model_path(), slots=1, ctx=512, threads=2, model=MODEL)
    kernel = Kernel(Settings(home=tmp_path, admin_token="adm", slots=1, ctx=512), [device])
    await kernel.start()
    yield kernel
    await kernel.stop()


async def run(kernel: Kernel, messages: list[dict[str, str]], n: int) -> Request:
    req: Request = await kernel.call(
        "llm.chat",
        kernel.authenticate("adm"),
        {"model": MODEL, "messages": messages, "max_tokens": n, "temperature": 0, "seed": 3},
    )
    while not isinstance(await req.events.get(), Done):
        pass
    return req


def script_quanta(kernel: Kernel, quanta: list[int]) -> None:
    """Make the current policy yield after exactly these token counts, in turn."""
    queue = kernel.scheduler.queue(MODEL)
    plan = iter(quanta)
    queue.quantum = lambda req: next(plan, None)  # type: ignore[method-assign]


def force_preemptions(kernel: Kernel, points: set[int]) -> None:
    """Ask for a preemption right after the token that brings the output to each point."""
    queue: Policy = kernel.scheduler.queue(MODEL)
    original = queue.on_token

    def on_token(req: Request) -> None:
        original(req)
        if len(req.snapshot.generated_ids) in points:
            kernel.scheduler.preempt(req)

    queue.on_token = on_token  # type: ignore[method-assign]


async def test_quantum_switches_after_1_7_and_31_tokens_change_nothing(one_slot: Kernel) -> None:
    plain = await run(one_slot, STORY, 48)
    script_quanta(one_slot, [1, 6, 24, 3, 1, 1, 1])  # yields after 1, 7, 31, 34, 35, 36, 37
    switched = await run(one_slot, STORY, 48)
    assert switched.dispatches == 8
    assert switched.snapshot.generated_ids == plain.snapshot.generated_ids
    assert switched.text == plain.text and len(plain.snapshot.generated_ids) == 48
    stats = one_slot.scheduler.stats
    assert stats.resumes == 7
    assert stats.cache_hit is not None and stats.cache_hit > 0.9  # the prefix cache served it


async def test_forced_preemptions_mid_generation_change_nothing(one_slot: Kernel) -> None:
    plain = await run(one_slot, STORY, 48)
    force_preemptions(one_slot, {1, 7, 31, 32, 33, 40})
    switched = await run(one_slot, STORY, 48)
    assert switched.dispatches == 7
    assert switched.snapshot.generated_ids == plain.snapshot.generated_ids
    assert switched.text == plain.text


async def test_round_robin_on_one_slot_interleaves_without_changing_outputs(
    one_slot: Kernel,
) -> None:
    prompts = [
        [{"role": "user", "content": "Name some fruits."}],
        [{"role": "user", "content": "Describe the ocean."}],
        [{"role": "user", "content": "How do birds fly?"}],
    ]
    plain = [await run(one_slot, p, 24) for p in prompts]
    await one_slot.call("sched.set", one_slot.authenticate("adm"), {"policy": "rr", "quantum": 4})
    switched = await asyncio.gather(*(run(one_slot, p, 24) for p in prompts))
    assert [r.text for r in switched] == [r.text for r in plain]
    assert all(r.preemptions >= 3 for r in switched)
    info = one_slot.sched_info()
    assert info["preemptions"] >= 9 and info["resume_cache_hit"] > 0.5


@pytest.fixture
def rr_server(tmp_path: Path) -> Any:
    device = LlamaCppDevice(default_model_path(), slots=1, ctx=512, threads=2, model=MODEL)
    settings = Settings(home=tmp_path, admin_token="adm", policy="rr", quantum=3, slots=1)
    kernel = Kernel(settings, [device])
    with serving(create_app(kernel)) as url:
        yield url


async def test_streams_continue_across_preemptions(rr_server: Any) -> None:
    url = rr_server
    headers = {"Authorization": "Bearer adm"}
    prompts = ["Tell me about cats.", "Tell me about dogs."]

    async def stream(c: httpx.AsyncClient, text: str) -> str:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 20,
            "temperature": 0,
            "stream": True,
        }
        out = []
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk
                    out.append(chunk["choices"][0]["delta"].get("content") or "")
        return "".join(out)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as c:
        together = await asyncio.gather(*(stream(c, t) for t in prompts))
        info = (await c.get("/v1/sys/scheduler")).json()
        assert info["preemptions"] >= 4  # the two streams took turns
        alone = []
        await c.put("/v1/sys/scheduler", json={"policy": "fifo"})
        for t in prompts:
            alone.append(await stream(c, t))
        metrics = (await c.get("/metrics")).text
    assert together == alone and all(together)
    assert "llmos:num_preemptions_total" in metrics
