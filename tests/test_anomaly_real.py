"""On the real model (SmolLM2-135M, embedded llama.cpp): a runaway process among
normal ones is flagged and throttled within a bounded number of samples, and
`ask` answers from the kernel's figures, quoting them. Run under
`flock /tmp/llmos-model.lock` (one real model at a time on this machine)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from llmos.devices import LlamaCppDevice, default_model_path
from llmos.kernel import Caller, Kernel
from llmos.kernel.ask import quoted, tidy
from llmos.kernel.detector import AnomalyConfig
from llmos.kernel.facts import Figure
from llmos.params import Settings
from tests.test_ask import telemetry

MODEL = "SmolLM2-135M-Instruct"
WORDS = ("river", "castle", "planet", "garden", "engine", "forest", "harbor", "violin", "desert")
ALERT_WITHIN = 120  # samples (0.25 s each) from the runaway's start to its alert


@contextlib.asynccontextmanager
async def real_kernel(home: Path, interval_s: float) -> AsyncIterator[tuple[Kernel, Caller]]:
    device = LlamaCppDevice(default_model_path(), slots=4, ctx=1024, threads=2, model=MODEL)
    settings = Settings(home=home, admin_token="adm", sample_interval_s=interval_s)
    kernel = Kernel(settings, [device])
    await kernel.start()
    try:
        yield kernel, kernel.authenticate("adm")
    finally:
        await kernel.stop()


async def chat(kernel: Kernel, who: Caller, text: str, max_tokens: int) -> None:
    args = {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens, "temperature": 0}  # fmt: skip
    req = await kernel.call("llm.chat", who, args)
    try:
        await req.outcome()
    except asyncio.CancelledError:
        kernel.cancel(req)
        raise


async def normal(kernel: Kernel, who: Caller, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(10_000):
        topic = " ".join(rng.sample(WORDS, 3))
        await chat(kernel, who, f"Task {i}: one line about a {topic}.", rng.randint(8, 16))
        await asyncio.sleep(rng.uniform(0.3, 0.6))


async def runaway(kernel: Kernel, who: Caller) -> None:
    while True:
        await chat(kernel, who, "Are we done yet? Count from one to fifty.", 48)


async def spawn(kernel: Kernel, admin: Caller, name: str) -> tuple[int, Caller]:
    made = await kernel.call("proc.spawn", admin, {"name": name})
    return made["pid"], kernel.authenticate(made["token"])


async def test_a_runaway_on_the_real_model_is_flagged_and_throttled(tmp_path: Path) -> None:
    async with real_kernel(tmp_path, 0.25) as (kernel, admin):
        kernel.anomalies.configure(AnomalyConfig(rate_samples=8))  # a 2 s rate window
        watch = kernel.anomalies
        tasks = []
        normals = []
        for seed in range(4):
            pid, who = await spawn(kernel, admin, f"normal-{seed}")
            normals.append(pid)
            tasks.append(asyncio.create_task(normal(kernel, who, seed)))
        await asyncio.sleep(2.0)  # the fleet settles
        pid, who = await spawn(kernel, admin, "runaway")
        began = watch.samples
        tasks.append(asyncio.create_task(runaway(kernel, who)))
        try:
            while not watch.alerts.of(pid):
                assert watch.samples - began <= ALERT_WITHIN, "the runaway was not flagged"
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks]
                await asyncio.sleep(0.05)
            alerts = watch.alerts.of(pid)
            print(f"flagged after {watch.samples - began} samples: {alerts[0].message}")
            assert {a.kind for a in alerts} <= {"loop", "token_rate"}
            assert all(a.action == "throttle" for a in alerts)
            proc = kernel.procs.get(pid)
            assert (proc.priority, proc.max_concurrent) == (0, 1)
            assert not any(a.pid in normals for a in watch.alerts.active.values())
            flagged = watch.samples
            tokens = kernel.sysmon.tokens_out(pid)
            while watch.samples < flagged + 8:  # throttled, it keeps working
                await asyncio.sleep(0.05)
            assert kernel.sysmon.tokens_out(pid) > tokens and proc.state.alive
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


NUMBER = re.compile(r"\d+(?:\.\d+)?")


async def test_ask_on_the_real_model_quotes_the_figures(tmp_path: Path) -> None:
    async with real_kernel(tmp_path, 0.5) as (kernel, admin):
        crawler, _ = await spawn(kernel, admin, "crawler")
        telemetry(kernel, crawler, total_s=8.67, wait_s=5.75, n=6)
        _, loader = await spawn(kernel, admin, "loader")
        load = [asyncio.create_task(chat(kernel, loader, f"Story {i}.", 48)) for i in range(6)]
        await asyncio.sleep(0.6)
        started = time.monotonic()
        reply = await kernel.call("sys.ask", admin, {"question": "Which process is slow?"})
        elapsed = time.monotonic() - started
        await asyncio.gather(*load)
    print(f"ask took {elapsed:.1f} s: {reply['answer']!r}")
    assert reply["error"] is None and reply["usage"]["completion_tokens"] > 0
    facts = " ".join(reply["facts"])
    assert f"pid {crawler} 'crawler' 8.67 s over 6 requests" in facts
    said = set(NUMBER.findall(tidy(reply["model_text"])))
    assert said & set(NUMBER.findall(facts)), (reply["model_text"], facts)  # quoted by the model
    d = reply["data"]
    for value in (d["waiting"], d["tokens_per_s"], d["e2e_p95_s"], 8.67):  # and all key ones
        assert quoted(reply["answer"], Figure("", round(value, 1), "")), value
