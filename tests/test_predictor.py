"""The output-length predictor learns who writes long answers from telemetry."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.kernel.predictor import OutputPredictor
from llmos.params import Settings


def rows(n: int) -> list[dict[str, object]]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        owner = rng.choice(["terse", "verbose"])
        length = rng.randint(5, 15) if owner == "terse" else rng.randint(150, 250)
        out.append(
            {
                "owner": owner,
                "pid": 1 if owner == "terse" else 2,
                "prompt_tokens": rng.randint(10, 400),  # unrelated to the output
                "max_tokens": 512,
                "output_tokens": length,
                "finish_reason": "stop",
                "created_at": float(i),
            }
        )
    return out


def test_heuristic_then_model_separates_owners() -> None:
    p = OutputPredictor(min_rows=64)
    assert p.model is None
    p.bootstrap(rows(40))  # below min_rows: heuristic only
    assert p.model is None
    terse = p.features("terse", "1", 100, 512)
    verbose = p.features("verbose", "2", 100, 512)
    assert terse[3] < 20 < 140 < verbose[3]  # session's last output
    p.bootstrap(rows(200))
    assert p.model is not None and p.trained_on >= 64
    guess_t = p.model.predict([list(p.features("terse", "1", 300, 512))])[0]
    guess_v = p.model.predict([list(p.features("verbose", "2", 20, 512))])[0]
    assert guess_t < 40 and guess_v > 120  # prompt length misleads; owner history does not
    p.close()


async def test_kernel_learns_from_its_own_telemetry(tmp_path: Path) -> None:
    kernel = Kernel(Settings(home=tmp_path, admin_token="a"), [MockDevice(slots=4)])
    for r in rows(100):  # yesterday's telemetry
        kernel.store.add_telemetry(
            {
                "request_id": "r",
                "owner": r["owner"],
                "pid": r["pid"],
                "model": "mock",
                "device": "mock0",
                "kind": "chat",
                "priority": 20,
                "prompt_tokens": r["prompt_tokens"],
                "output_tokens": r["output_tokens"],
                "cached_tokens": 0,
                "max_tokens": 512,
                "queue_wait_s": 0.0,
                "ttft_s": 0.0,
                "total_s": 1.0,
                "finish_reason": "stop",
                "created_at": r["created_at"],
                "preemptions": 0,
                "session": str(r["pid"]),
            }
        )
    await kernel.start()
    assert kernel.predictor.model is not None
    info = await kernel.call("sched.get", kernel.authenticate("a"))
    assert info["predictor"]["trained_on"] == 100
    await asyncio.sleep(0)
    await kernel.stop()
