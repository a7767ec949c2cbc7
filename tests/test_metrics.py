"""Prometheus `/metrics` read back with prometheus-client's own parser after real
traffic on the mock device, and the deploy/ configs: the Grafana dashboard charts
series that exist, and the scrape config targets the kernel as it serves /metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from llmos.api import create_app
from llmos.devices import MockDevice
from llmos.devices._engine_metrics import parse_metrics
from llmos.errors import Killed
from llmos.kernel import Kernel, Request
from llmos.params import DEFAULT_PORT, Settings
from tests.test_engine_metrics import LLAMACPP_METRICS

ADMIN = "test-admin-token"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MSG = [{"role": "user", "content": "hello"}]


# -- reading /metrics ------------------------------------------------------------------
class Scrape:
    """One /metrics response, parsed by prometheus-client."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def all(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.all(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {found}"
        return float(found[0].value)

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


async def scrape(client: httpx.AsyncClient) -> Scrape:
    r = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


@dataclass
class Booted:
    kernel: Kernel
    device: MockDevice
    client: httpx.AsyncClient  # the app in-process, no token set

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def _booter(tmp_path: Path) -> Callable[..., Any]:
    async def boot(device: MockDevice, **settings: Any) -> Booted:
        kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN, **settings), [device])
        await kernel.start()
        app = create_app(kernel, manage_kernel=False)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        return Booted(kernel, device, client)

    return boot


@pytest_asyncio.fixture
async def priority(tmp_path: Path) -> AsyncIterator[Booted]:
    """One slot under the priority policy: a high-priority request preempts."""
    booted: Booted = await _booter(tmp_path)(
        MockDevice(slots=1, context_length=1024, token_delay=0.002), policy="priority"
    )
    yield booted
    await booted.client.aclose()
    await booted.kernel.stop()


async def _chat(b: Booted, token: str, n: int, text: str = "hello") -> dict[str, Any]:
    body = {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": n}
    r = await b.client.post("/v1/chat/completions", json=body, headers=b.auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.002)


async def test_scrape_after_requests_and_a_preemption(priority: Booted) -> None:
    b, k = priority, priority.kernel
    admin = k.authenticate(ADMIN)
    finished: list[Request] = []
    k.listeners.append(finished.append)
    alice = await k.call("user.add", admin, {"name": "alice"})
    low = await k.call("proc.spawn", k.authenticate(alice["token"]), {"name": "low", "priority": 1})
    high = await k.call("proc.spawn", admin, {"name": "high", "priority": 30})

    slow = asyncio.create_task(_chat(b, low["token"], 200, "slow"))
    await _until(lambda: k.scheduler.num_running() == 1)
    fast = await _chat(b, high["token"], 10, "fast")  # takes alice's slot
    answers = [await slow, fast, await _chat(b, ADMIN, 5)]
    assert [a["usage"]["completion_tokens"] for a in answers] == [200, 10, 5]
    prompts = [a["usage"]["prompt_tokens"] for a in answers]
    assert len(finished) == 3 and sum(r.preemptions for r in finished) == 1

    m = await scrape(b.client)
    # vLLM's counters, under llmos:
    assert m.value("llmos:generation_tokens_total") == 215
    assert m.value("llmos:prompt_tokens_total") == sum(prompts)
    assert m.value("llmos:request_success_total", finished_reason="length") == 3
    assert m.value("llmos:num_preemptions_total") == 1
    assert m.value("llmos:num_resumes_total") == 1
    # per owner (user), never per pid
    gen = {"direction": "generation"}
    assert m.value("llmos:owner_tokens_total", owner="alice", **gen) == 200
    assert m.value("llmos:owner_tokens_total", owner="admin", **gen) == 15
    assert m.value("llmos:owner_tokens_total", owner="alice", direction="prompt") == prompts[0]
    assert m.value("llmos:owner_tokens_total", owner="admin", direction="prompt") == sum(
        prompts[1:]
    )
    assert not any("pid" in s.labels for s in m.samples)
    # histograms: one observation per finished request ...
    for name in (
        "llmos:time_to_first_token_seconds",
        "llmos:e2e_request_latency_seconds",
        "llmos:request_queue_time_seconds",
        "llmos:request_time_per_output_token_seconds",
        "llmos:request_prompt_tokens",
        "llmos:request_generation_tokens",
        "llmos:request_preemptions",
    ):
        assert m.families[name].type == "histogram", name
        assert m.value(name + "_count") == 3, name
        assert m.value(name + "_bucket", le="+Inf") == 3, name
    assert m.value("llmos:request_generation_tokens_sum") == 215
    assert m.value("llmos:request_prompt_tokens_sum") == sum(prompts)
    assert m.value("llmos:request_preemptions_sum") == 1
    assert m.value("llmos:request_generation_tokens_bucket", le="5.0") == 1
    assert m.value("llmos:request_generation_tokens_bucket", le="10.0") == 2
    e2e, ttft = (
        m.value(f"llmos:{x}_sum")
        for x in ("e2e_request_latency_seconds", "time_to_first_token_seconds")
    )
    assert 0 < ttft < e2e
    # ... and inter-token latency: one per gap between two tokens of one dispatch
    gaps = sum(r.output_tokens - r.dispatches for r in finished)
    assert gaps == 215 - 3 - 1 == sum(r.itl_gaps for r in finished)
    assert m.value("llmos:inter_token_latency_seconds_count") == gaps
    assert m.value("llmos:inter_token_latency_seconds_sum") == pytest.approx(
        sum(r.itl_total_s for r in finished)
    )
    buckets = sorted(
        (float(s.labels["le"]), s.value) for s in m.all("llmos:inter_token_latency_seconds_bucket")
    )
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), gaps)
    # idle now: nothing running or waiting, the queue labelled by the active policy
    assert m.value("llmos:num_requests_running", device="mock0") == 0
    assert m.value("llmos:num_requests_waiting") == 0
    assert m.value("llmos:queue_depth", policy="priority", model="mock") == 0


async def test_a_busy_kernel_shows_its_queue_slots_kv_cache_and_host(priority: Booted) -> None:
    b, k = priority, priority.kernel
    admin = k.authenticate(ADMIN)
    args = {"model": "mock", "messages": MSG, "max_tokens": 900}
    running = await k.call("llm.chat", admin, args)
    waiting = [await k.call("llm.chat", admin, args) for _ in range(2)]
    await _until(lambda: running.output_tokens >= 3)
    await k.sysmon.engines.refresh()
    k.sysmon.sample()
    m = await scrape(b.client)

    assert m.value("llmos:queue_depth", policy="priority", model="mock") == 2
    assert m.value("llmos:num_requests_waiting") == 2
    assert m.value("llmos:num_requests_running", device="mock0") == 1
    assert m.value("llmos:device_slot_occupancy", device="mock0") == 1.0
    assert m.value("llmos:device_tokens_per_second", device="mock0") > 0
    # the device's "KV cache": the running sequence, prompt and tokens so far
    held = m.value("llmos:kv_cache_tokens", device="mock0")
    assert running.prompt_tokens + 3 <= held <= running.prompt_tokens + running.output_tokens
    assert m.value("llmos:kv_cache_usage_perc", device="mock0") == pytest.approx(held / 1024)
    assert k.sysmon.latest().devices["mock0"]["kv_cache_tokens"] == held
    for component in ("kernel", "children"):
        assert m.value("llmos:process_cpu_percent", component=component) >= 0
        assert m.value("llmos:process_resident_memory_bytes", component=component) >= 0
    assert m.value("llmos:process_resident_memory_bytes", component="kernel") > 10 * 2**20

    # a policy switch relabels the queue
    await k.call("sched.set", admin, {"policy": "fifo"})
    m = await scrape(b.client)
    assert m.value("llmos:queue_depth", policy="fifo", model="mock") == 2
    assert m.all("llmos:queue_depth", policy="priority") == []

    for req in [running, *waiting]:
        k.scheduler.cancel(req, Killed("test over"))
    await asyncio.gather(*(r.outcome() for r in [running, *waiting]))
    await k.sysmon.engines.refresh()
    m = await scrape(b.client)
    assert m.value("llmos:kv_cache_tokens", device="mock0") == 0
    assert m.value("llmos:request_success_total", finished_reason="abort") == 3
    assert m.value("llmos:generation_tokens_total") == running.output_tokens


async def test_metrics_take_an_overseers_token_as_the_scrape_config_sends(
    priority: Booted,
) -> None:
    """`/metrics` names every owner: admins and viewers only; deploy/prometheus.yml
    sends a viewer's bearer token from a file."""
    c = priority.client
    anonymous = await c.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and "bearer" in anonymous.json()["error"]["message"]
    k = priority.kernel
    admin = k.authenticate(ADMIN)
    status = {}
    for name, role in (("carol", "user"), ("vic", "viewer")):
        token = (await k.call("user.add", admin, {"name": name, "role": role}))["token"]
        status[role] = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert status["user"].status_code == 403
    assert status["user"].json()["error"]["param"] == "authorization"
    assert (
        status["viewer"].status_code == 200
        and "llmos:num_requests_running" in status["viewer"].text
    )
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "llmos"]
    assert job["metrics_path"] == "/metrics" and job.get("scheme", "http") == "http"
    assert job["scrape_interval"] == "5s"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"127.0.0.1:{DEFAULT_PORT}"]
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"]


# -- the dashboard charts what /metrics shows -----------------------------------------
class EngineLike(MockDevice):
    """A mock device reporting what the embedded llama.cpp reports about itself."""

    async def engine_metrics(self) -> dict[str, float]:
        base = await super().engine_metrics()
        extra = parse_metrics(LLAMACPP_METRICS) | {"kv_cache_reusable_tokens": 23.0}
        return base | extra


# Families the dashboard must chart (llmos:num_alerts and later ones are not required).
CHARTED = {
    "llmos:num_requests_running", "llmos:num_requests_waiting", "llmos:num_requests_parked",
    "llmos:queue_depth", "llmos:generation_tokens", "llmos:prompt_tokens",
    "llmos:device_tokens_per_second", "llmos:device_slot_occupancy", "llmos:device_slots",
    "llmos:time_to_first_token_seconds", "llmos:inter_token_latency_seconds",
    "llmos:request_time_per_output_token_seconds", "llmos:e2e_request_latency_seconds",
    "llmos:request_queue_time_seconds", "llmos:num_preemptions", "llmos:num_resumes",
    "llmos:request_preemptions", "llmos:owner_tokens", "llmos:request_success",
    "llmos:request_prompt_tokens", "llmos:request_generation_tokens",
    "llmos:num_processes_alive", "llmos:kv_cache_usage_perc", "llmos:kv_cache_tokens",
    "llmos:kv_cache_reusable_tokens", "llmos:prefix_cache_hits", "llmos:prefix_cache_queries",
    "llmos:resume_cache_hit_ratio", "llmos:device_healthy", "llmos:device_breaker_state",
    "llmos:device_faults", "llmos:process_cpu_percent", "llmos:process_resident_memory_bytes",
}  # fmt: skip
_SUFFIX = re.compile(r"_(bucket|sum|count|total)$")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out += [p, *p.get("panels", [])]
    return [p for p in out if p["type"] != "row"]


async def test_the_grafana_dashboard_charts_series_that_exist(tmp_path: Path) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "llmos.json").read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = _panels(dashboard)
    assert len(panels) >= 12
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = []
    for p in panels:
        assert p["type"] == "timeseries" and p["title"] and p["targets"], p.get("title")
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}" and t["expr"]
            exprs.append(t["expr"])
    referenced = {n for e in exprs for n in re.findall(r"llmos:[A-Za-z0-9_:]+", e)}
    for e in exprs:  # quantiles are taken over buckets
        if "histogram_quantile" in e:
            assert re.search(r"llmos:\w+_bucket", e), e

    booted: Booted = await _booter(tmp_path)(EngineLike(slots=2, token_delay=0.001))
    try:
        await _chat(booted, ADMIN, 5)
        await booted.kernel.sysmon.engines.refresh()
        m = await scrape(booted.client)
    finally:
        await booted.client.aclose()
        await booted.kernel.stop()
    assert referenced - m.names() == set(), "charted but not exported"
    assert CHARTED - {_SUFFIX.sub("", n) for n in referenced} == set(), "exported, not charted"
    assert set(m.families) >= CHARTED, "listed but not exported"


async def test_a_device_that_reports_nothing_has_no_kv_series(tmp_path: Path) -> None:
    class Silent(MockDevice):
        async def engine_metrics(self) -> dict[str, float]:
            return {}

    booted: Booted = await _booter(tmp_path)(Silent())
    try:
        await booted.kernel.sysmon.engines.refresh()
        m = await scrape(booted.client)
    finally:
        await booted.client.aclose()
        await booted.kernel.stop()
    assert "llmos:kv_cache_usage_perc" in m.families  # declared ...
    assert m.all("llmos:kv_cache_usage_perc") == []  # ... with no sample, not a made-up 0
    assert "kv_cache_tokens" not in booted.kernel.sysmon.latest().devices["mock0"]
