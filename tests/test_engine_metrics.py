"""The engines' own figures: llama.cpp's /metrics and /slots and vLLM's /metrics parsed,
the probe that reads them through a driver's HTTP client, and the kernel's background
monitor that keeps the latest (no model here: tests/test_metrics_real.py runs one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llmos.devices import MockDevice, OpenAIHttpDevice
from llmos.devices._engine_metrics import EngineProbe, parse_metrics, parse_slots
from llmos.kernel.enginemon import EngineMonitor

# What this llama.cpp build answers (captured from the embedded engine).
LLAMACPP_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 7
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 3
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 8
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
"""
LLAMACPP_SLOTS = [
    {"id": 0, "n_ctx": 512, "is_processing": False},  # never used
    {
        "id": 1,
        "n_ctx": 512,
        "is_processing": True,
        "n_prompt_tokens": 11,
        "next_token": [{"n_decoded": 5}],
    },
    {"id": 2, "n_ctx": 512, "is_processing": False, "n_prompt_tokens": 23},  # kept
]
VLLM_METRICS = """\
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_count{model_name="m"} 1.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 0.5
"""


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.002)


def test_llamacpp_metrics_and_slots_parse() -> None:
    m = parse_metrics(LLAMACPP_METRICS)
    assert m == {
        "prompt_tokens_total": 7,
        "prompt_tokens_cached_total": 3,
        "tokens_predicted_total": 8,
        "requests_processing": 1,
    }
    kv = parse_slots(LLAMACPP_SLOTS)
    assert kv == {
        "kv_cache_usage_ratio": 11 / 1536,
        "kv_cache_tokens": 11,
        "kv_cache_reusable_tokens": 23,
        "kv_cache_size_tokens": 1536,
        "n_ctx_slot": 512,
        "slots_processing": 1,
    }


def test_vllm_kv_gauge_is_taken_labelled_and_histograms_left_out() -> None:
    m = parse_metrics(VLLM_METRICS)
    assert m == {"kv_cache_usage_ratio": 0.5}  # the fullest engine; labelled others dropped


@pytest.mark.parametrize(
    "slots",
    [None, {}, [], "x", [1, 2], [{"id": 0}], [{"n_ctx": "512"}], [{"n_ctx": 0}],
     [{"n_ctx": 512, "n_prompt_tokens": "many"}]],
)  # fmt: skip
def test_bad_slots_give_no_figures(slots: Any) -> None:
    assert parse_slots(slots) == {}


def test_bad_metrics_text_gives_no_figures() -> None:
    assert parse_metrics("this is { not prometheus") == {}
    assert parse_metrics("") == {}


async def test_probe_asks_once_for_what_is_not_served_and_survives_failures() -> None:
    calls: list[str] = []
    state = {"down": False}

    def engine(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if state["down"]:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/metrics":
            return httpx.Response(200, text=LLAMACPP_METRICS)
        return httpx.Response(404, json={"error": "no slots endpoint"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(engine)) as http:
        probe = EngineProbe(http, "http://engine")
        first = await probe.read()
        assert first["tokens_predicted_total"] == 8 and "kv_cache_usage_ratio" not in first
        assert await probe.read() == first
        assert calls == ["/metrics", "/slots", "/metrics"]  # /slots: 404, not asked again
        state["down"] = True
        assert await probe.read() == {}
    assert await probe.read() == {}  # the client is closed: still no exception


async def test_http_device_passes_a_llama_servers_figures_through() -> None:
    def engine(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer k"
        if request.url.path == "/metrics":
            return httpx.Response(200, text=LLAMACPP_METRICS)
        if request.url.path == "/slots":
            return httpx.Response(200, json=LLAMACPP_SLOTS)
        return httpx.Response(404)

    dev = OpenAIHttpDevice(
        "http://engine/v1", api_key="k", model="m", transport=httpx.MockTransport(engine)
    )
    got = await dev.engine_metrics()
    assert got["kv_cache_tokens"] == 11 and got["requests_processing"] == 1
    await dev.close()
    assert await dev.engine_metrics() == {}


async def test_a_hosted_api_without_metrics_is_asked_once() -> None:
    calls: list[str] = []

    def hosted(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(404, json={"error": {"message": "not found"}})

    dev = OpenAIHttpDevice(
        "https://api.example/v1", model="m", transport=httpx.MockTransport(hosted)
    )
    for _ in range(3):
        assert await dev.engine_metrics() == {}
    assert calls == ["/metrics", "/slots"]
    await dev.close()


class Moody(MockDevice):
    """engine_metrics answers, hangs or raises, as the test says."""

    mood = "fine"

    async def engine_metrics(self) -> dict[str, float]:
        if self.mood == "hang":
            await asyncio.sleep(30)
        if self.mood == "raise":
            raise RuntimeError("driver bug")
        return {"kv_cache_usage_ratio": 0.5, "kv_cache_tokens": 7.0, "other": 1.0}


async def test_monitor_drops_a_device_that_hangs_or_fails_and_keeps_the_others() -> None:
    a, b = Moody(name="a"), MockDevice(name="b")
    mon = EngineMonitor([a, b], interval_s=0.05)
    mon.timeout_s = 0.05
    await mon.refresh()
    assert mon.last["a"]["other"] == 1.0 and mon.kv("a") == {
        "kv_cache_usage_ratio": 0.5,
        "kv_cache_tokens": 7.0,
    }
    assert mon.last["b"] == {"kv_cache_tokens": 0.0, "kv_cache_usage_ratio": 0.0}
    for mood in ("hang", "raise"):
        a.mood = mood
        await mon.refresh()
        assert "a" not in mon.last and mon.kv("a") == {} and "b" in mon.last, mood
    a.mood = "fine"
    mon.start()
    try:
        await _until(lambda: "a" in mon.last)
    finally:
        await mon.stop()
    assert mon._task is None
