"""The embedded llama.cpp's own figures (KV cache from /slots, counters from /metrics)
on the real SmolLM2, through LlamaCppDevice.engine_metrics and the kernel's /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmos.api import create_app
from llmos.devices import LlamaCppDevice, default_model_path
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.types import Snapshot, Token
from tests import _device_behaviour as behaviour

pytestmark = pytest.mark.model
ADMIN = "adm"
CTX = 256  # per slot


async def test_engine_metrics_report_the_kv_cache(tmp_path: Path) -> None:
    dev = LlamaCppDevice(
        default_model_path(), slots=2, ctx=CTX, threads=behaviour.THREADS, name="real0"
    )
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [dev])
    await kernel.start()  # loads the model
    try:
        idle = await dev.engine_metrics()
        assert all(isinstance(v, float) for v in idle.values())
        assert idle["kv_cache_usage_ratio"] == 0 and idle["kv_cache_tokens"] == 0
        assert idle["n_ctx_slot"] == CTX and idle["kv_cache_size_tokens"] == 2 * CTX
        assert idle["requests_processing"] == 0 and "tokens_predicted_total" in idle

        # during a generation: the running sequence holds its prompt and tokens so far
        prompt = await behaviour.chat_prompt(dev, behaviour.STORY)
        snapshot = Snapshot(prompt, behaviour.greedy(24, ignore_eos=True))
        stream = dev.generate(snapshot)
        seen = 0
        during: dict[str, float] = {}
        async for event in stream:
            seen += isinstance(event, Token)
            if seen == 8:
                during = await dev.engine_metrics()
        assert seen == 24
        assert during["slots_processing"] == 1 and 0 < during["kv_cache_usage_ratio"] <= 1
        assert len(prompt) <= during["kv_cache_tokens"] <= len(prompt) + 24
        assert during["kv_cache_usage_ratio"] == during["kv_cache_tokens"] / (2 * CTX)

        # after it: nothing running, the slot keeps the sequence for prefix reuse
        after = await dev.engine_metrics()
        assert after["kv_cache_usage_ratio"] == 0 and after["slots_processing"] == 0
        assert after["kv_cache_reusable_tokens"] >= len(prompt) + 23
        assert after["tokens_predicted_total"] >= idle["tokens_predicted_total"] + 24

        # the kernel's /metrics, read by prometheus-client
        app = create_app(kernel, manage_kernel=False)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers, timeout=60
        ) as c:
            body = {"model": dev.model, "messages": [{"role": "user", "content": "Hi"}]}
            r = await c.post("/v1/chat/completions", json={**body, "max_tokens": 8})
            assert r.status_code == 200, r.text
            await kernel.sysmon.engines.refresh()
            text = (await c.get("/metrics")).text
        values = {
            (s.name, s.labels.get("device")): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert 0 <= values[("llmos:kv_cache_usage_perc", "real0")] <= 1
        assert values[("llmos:kv_cache_tokens", "real0")] == 0  # idle again
        assert values[("llmos:kv_cache_reusable_tokens", "real0")] > 0
        queries = values[("llmos:prefix_cache_queries_total", "real0")]
        hits = values[("llmos:prefix_cache_hits_total", "real0")]
        assert 0 <= hits <= queries and queries >= len(prompt)
        assert (
            values[("llmos:generation_tokens_total", None)]
            == r.json()["usage"]["completion_tokens"]
        )
    finally:
        await asyncio.wait_for(kernel.stop(), 60)
