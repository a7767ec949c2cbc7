"""The system sampler (sys.top, sys.history) and renice, on the mock device."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.errors import Forbidden, InvalidRequest, NotFound
from llmos.kernel import ReqState
from tests.conftest import MockKernel
from tests.test_kernel import MSGS, make


async def test_sample_counts_tokens_queue_latency_and_children(tmp_path: Path) -> None:
    kernel, _, admin = await make(tmp_path, slots=1, token_delay=0.002)
    m = kernel.sysmon
    m.sample()  # a baseline: rates count from here
    args = {"model": "mock", "messages": MSGS, "max_tokens": 20}
    reqs = [await kernel.call("llm.chat", admin, args) for _ in range(3)]
    queued = m.sample()
    assert queued.waiting == 2 and queued.running == 1 and queued.slots == 1
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        await asyncio.gather(*(r.outcome() for r in reqs))
        s = m.sample()
        assert s.finished == 3 and s.errors == 0
        assert s.tokens_per_s > 0 and s.devices["mock0"]["tokens_per_s"] == s.tokens_per_s
        assert s.e2e_p50_s is not None and s.ttft_p50_s is not None
        assert s.e2e_p95_s is not None and s.e2e_p95_s >= s.e2e_p50_s
        assert s.rss_bytes > 10 * 2**20 and s.children_rss_bytes > 1 * 2**20
        pid = reqs[0].pid
        rows = kernel.store.telemetry(3)
        assert {r["app"] for r in rows} == {"(implicit)"}
        assert all(r["itl_s"] is not None and r["itl_s"] > 0 for r in rows)
        assert m.proc_rates[pid] > 0 and m.tokens_out(pid) == 60
        assert m.sample().finished == 0
        assert m.proc_rates[pid] == 0  # nothing more decoded
    finally:
        child.kill()
        child.wait()
    assert [x.t for x in m.since(3600)] == sorted(x.t for x in m.since(3600))
    await kernel.stop()


async def test_the_sampler_runs_in_the_background(tmp_path: Path) -> None:
    from llmos.devices import MockDevice
    from llmos.kernel import Kernel
    from llmos.params import Settings

    kernel = Kernel(
        Settings(home=tmp_path, admin_token="adm", sample_interval_s=0.05), [MockDevice()]
    )
    await kernel.start()
    seen: list[float] = []
    kernel.sysmon.listeners.append(lambda s: seen.append(s.t))
    for _ in range(100):
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.02)
    await kernel.stop()
    assert len(seen) >= 3 and kernel.sysmon._task is None


def test_sample_interval_is_validated() -> None:
    from llmos.params import Settings

    with pytest.raises(InvalidRequest) as e:
        Settings(sample_interval_s=0).validate()
    assert e.value.param == "sample_interval_s"


async def test_renice_reorders_the_queue_and_only_admins_raise(tmp_path: Path) -> None:
    kernel, _, admin = await make(tmp_path, slots=1, token_delay=0.005)
    await kernel.call("sched.set", admin, {"policy": "priority"})
    await kernel.call("user.add", admin, {"name": "bob", "role": "user"})
    bob = kernel.authenticate((await kernel.call("token.create", admin, {"user": "bob"}))["token"])
    a = kernel.authenticate((await kernel.call("proc.spawn", bob, {"name": "a"}))["token"])
    b = kernel.authenticate((await kernel.call("proc.spawn", bob, {"name": "b"}))["token"])
    args = {"model": "mock", "messages": MSGS, "max_tokens": 30}
    blocker = await kernel.call("llm.chat", admin, args)
    first = await kernel.call("llm.chat", a, args)
    second = await kernel.call("llm.chat", b, args)
    # b was queued after a at the same priority; lowering a lets b go first
    proc = await kernel.call("proc.renice", bob, {"pid": a.pid, "priority": 2})
    assert proc["priority"] == 2 and first.priority == 2
    with pytest.raises(Forbidden) as e:
        await kernel.call("proc.renice", bob, {"pid": a.pid, "priority": 30})
    assert e.value.param == "priority"
    with pytest.raises(InvalidRequest) as e2:
        await kernel.call("proc.renice", admin, {"pid": a.pid, "priority": 40})
    assert e2.value.param == "priority"
    with pytest.raises(NotFound):
        await kernel.call("proc.renice", admin, {"pid": 999, "priority": 1})
    await asyncio.gather(blocker.outcome(), first.outcome(), second.outcome())
    assert second.started_at is not None and first.started_at is not None
    assert second.started_at < first.started_at
    assert first.state == ReqState.FINISHED_LENGTH
    assert kernel.store.load_processes()[-1].priority in (2, 20)
    assert (await kernel.call("proc.renice", admin, {"pid": a.pid, "priority": 35}))[
        "priority"
    ] == 35
    await kernel.stop()


async def test_top_and_history_routes(mock: MockKernel) -> None:
    c = mock.client
    spawned = (await c.post("/v1/processes", json={"name": "agent"})).json()
    mock.kernel.sysmon.sample()
    top = (await c.get("/v1/sys/top")).json()
    assert {"processes", "devices", "queues", "system", "sample", "policy"} <= set(top)
    row = next(p for p in top["processes"] if p["pid"] == spawned["pid"])
    assert row["tokens_per_s"] == 0 and row["state"] == "ready"
    assert top["devices"][0]["name"] == "mock0" and top["devices"][0]["slots"] == 2
    assert top["queues"] == {"mock": 0} and top["system"]["rss_bytes"] > 0
    hist = (await c.get("/v1/sys/history", params={"seconds": 60})).json()
    assert hist["object"] == "list" and len(hist["data"]) >= 1
    assert {"t", "waiting", "tokens_per_s", "cpu_percent"} <= set(hist["data"][0])
    bad = await c.get("/v1/sys/history", params={"seconds": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "seconds"
    r = await c.post(f"/v1/processes/{spawned['pid']}/renice", json={"priority": 7})
    assert r.status_code == 200 and r.json()["priority"] == 7
    r = await c.post(f"/v1/processes/{spawned['pid']}/renice", json={"priority": 99})
    assert r.status_code == 400 and r.json()["error"]["param"] == "priority"
    r = await c.post("/v1/processes/4242/renice", json={"priority": 1})
    assert r.status_code == 404
