"""Auto-tuning the real embedded SmolLM2: `tune.run` reloads the engine with new
settings, records the decision with measured figures, and a request running across
the retune ends with the same greedy text as without one.
(Run alone on the machine: `flock /tmp/llmos-model.lock pytest tests/test_tune_real.py`.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import LlamaCppDevice, default_model_path
from llmos.kernel import Kernel, Request, calibrate
from llmos.kernel.tune_search import Measure, Space
from llmos.params import Settings
from tests.conftest import MODEL

pytestmark = pytest.mark.model

STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


async def story(kernel: Kernel) -> Request:
    args = {"model": MODEL, "messages": STORY, "max_tokens": 48, "temperature": 0}
    req: Request = await kernel.call("llm.chat", kernel.authenticate("adm"), args)
    return req


async def test_tune_reloads_the_engine_records_and_keeps_a_running_answer(
    tmp_path: Path,
) -> None:
    device = LlamaCppDevice(default_model_path(), slots=1, ctx=512, threads=2, model=MODEL)
    kernel = Kernel(Settings(home=tmp_path, admin_token="adm"), [device])
    await kernel.start()
    try:
        assert device.train_context == 8192  # read from the engine
        reference = await story(kernel)
        assert (await reference.outcome()).error is None

        async def measure(dev: Any, burst: list[list[int]]) -> Measure:
            return await calibrate.measure(dev, burst[:2], tokens=8)  # short: a test

        kernel.tuner.measure = measure
        kernel.tuner.space = Space(max_slots=2, batches=(512,))  # a few trials, whatever the speed
        req = await story(kernel)
        while req.output_tokens < 5:  # mid-answer when the tuning starts
            await asyncio.sleep(0.01)
        admin = kernel.authenticate("adm")
        decision = await kernel.call("tune.run", admin, {"max_seconds": 600})
        assert (await req.outcome()).error is None
        assert req.text == reference.text and req.output_tokens == reference.output_tokens
        assert req.preemptions >= 1  # it left its slot for the retune and came back

        before, after = decision["measured_before"], decision["measured_after"]
        assert before["tokens_per_s"] > 0 and after["tokens_per_s"] > 0
        assert before["p95_s"] > 0 and before["requests"] == 2 and before["tokens"] == 16
        assert len(decision["trials"]) >= 3  # both neighbours were measured (engine reloaded)
        assert decision["reason"].endswith("s)") and "local optimum" in decision["reason"]
        assert decision["before"] == {"slots": 1, "context_length": 512, "batch": None}
        running = {"slots": device.slots, "context_length": device.context_length}
        if decision["kept"]:
            assert running == {k: decision["after"][k] for k in running}
        else:
            assert running == {"slots": 1, "context_length": 512}
        props = (await device._http.get("/props")).json()  # type: ignore[union-attr]
        assert props["total_slots"] == device.slots  # the engine itself was reloaded
        (row,) = await kernel.call("tune.history", admin, {})
        assert row["id"] == decision["id"] and row["measured_after"] == after

        again = await story(kernel)  # the reloaded engine answers as before
        assert (await again.outcome()).error is None and again.text == reference.text
    finally:
        await kernel.stop()
