"""Anomaly detection: the rules on synthetic inputs (the detector alone), then the
kernel's alerts and throttles on the mock device, driven by manual samples (the
background sampler is set to an hour, so every sample here is one we take)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import MockDevice
from llmos.errors import Forbidden, InvalidRequest, Killed, NotFound, Overloaded
from llmos.kernel import Caller, Kernel, ReqState
from llmos.kernel.anomaly import Anomalies
from llmos.kernel.detector import AnomalyConfig, Detector, Finding, Observation, Spread
from llmos.kernel.process import Process
from llmos.params import Settings

QUIET = 3600.0  # the background sampler's interval: never, during a test


# -- the rules, on synthetic inputs ----------------------------------------------------
def obs(pid: int, at: float = 0.0, *, failed: bool = False, e2e: float | None = 1.0,
        itl: float | None = 0.02, prompt: int | None = None) -> Observation:  # fmt: skip
    """A finished request; its prompt is unique unless given."""
    key = hash(("prompt", pid, at)) if prompt is None else prompt
    return Observation(pid, at, failed, None if failed else e2e, itl, key, 9)


def steps(
    det: Detector, n: int, rates: dict[int, float], exempt: frozenset[int] = frozenset()
) -> dict[tuple[int, str], Finding]:
    """`n` samples; what held at the last one."""
    found: list[Finding] = []
    for _ in range(n):
        found = det.step(0.0, rates, set(exempt))
    return {(f.pid, f.kind): f for f in found}


def test_spread_is_robust_to_one_outlier() -> None:
    s = Spread.of([10, 11, 12, 1000])
    assert s.median == 11.5 and s.mad == pytest.approx(1.0 * 1.4826)
    assert s.threshold(5, 3, 20) == pytest.approx(34.5)  # 3 x median wins over 5 MADs
    assert Spread.of([0, 0, 0]).threshold(5, 3, 20) == 20  # the floor keeps a quiet fleet


def test_loop_needs_eight_repeats_and_three_samples() -> None:
    det = Detector()
    for i in range(7):
        det.observe(obs(1, i * 0.1, prompt=42))
    assert steps(det, 5, {1: 0.0}) == {}
    det.observe(obs(1, 0.8, prompt=42))
    assert det.step(1.0, {1: 0.0}, set())[0].strikes == 1
    det.step(1.0, {1: 0.0}, set())
    [f] = det.step(1.0, {1: 0.0}, set())
    assert (f.kind, f.value, f.threshold, f.strikes) == ("loop", 8.0, 8.0, 3)
    assert "same prompt (9 tokens) 8 times in 60 s" in f.detail
    assert det.step(61.0, {1: 0.0}, set()) == []  # out of the window: quiet, strikes reset
    assert det.tracks[1].strikes["loop"] == 0


def test_varied_prompts_are_no_loop() -> None:
    det = Detector()
    for i in range(50):
        det.observe(obs(1, i * 0.1, prompt=i % 10))  # each prompt 5 times
    assert steps(det, 5, {1: 0.0}) == {}


def test_error_rate_against_floor_and_fleet() -> None:
    det = Detector()
    for pid in (1, 2, 3):
        for i in range(10):
            det.observe(obs(pid, i, failed=i == 0))  # 10 % fail: normal
    for i in range(10):
        det.observe(obs(4, i, failed=i < 6))  # 60 %
    found = steps(det, 3, {1: 0, 2: 0, 3: 0, 4: 0})
    assert set(found) == {(4, "error_rate")}
    f = found[4, "error_rate"]
    assert f.value == pytest.approx(0.6) and f.threshold == 0.5
    assert "6 of its last 10 requests failed" in f.detail

    everyone = Detector()  # all failing alike: the system's trouble, not one process's
    for pid in (1, 2, 3, 4):
        for i in range(10):
            everyone.observe(obs(pid, i, failed=i < 6 + (pid == 4)))
    assert steps(everyone, 3, {1: 0, 2: 0, 3: 0, 4: 0}) == {}

    alone = Detector()  # too few requests to judge
    for i in range(4):
        alone.observe(obs(1, i, failed=True))
    assert steps(alone, 3, {1: 0}) == {}


def test_kills_and_device_failures_are_not_the_process_s_errors() -> None:
    from llmos.errors import DeviceError
    from llmos.kernel.request import Request
    from llmos.types import SamplingParams, Snapshot

    def req(error: Exception) -> Request:
        r = Request(1, "u", "m", "chat", Snapshot([1, 2, 3], SamplingParams(max_tokens=4)))
        r.finish(ReqState.FINISHED_ERROR, error)  # type: ignore[arg-type]
        return r

    assert not Observation.of(req(Killed("killed"))).failed
    assert not Observation.of(req(DeviceError("down"))).failed
    o = Observation.of(req(InvalidRequest("the engine refused it")))
    assert o.failed and o.e2e_s is None and o.prompt == hash((1, 2, 3))


def test_latency_only_against_a_fleet() -> None:
    det = Detector()  # long answers are no anomaly: end-to-end latency is not judged
    for pid in (1, 2, 3):
        for i in range(6):
            det.observe(obs(pid, i, e2e=1.0 + pid * 0.1))
    for i in range(6):
        det.observe(obs(4, i, e2e=30.0))
    assert steps(det, 3, {1: 0, 2: 0, 3: 0, 4: 0}) == {}

    slow_token = Detector()
    for pid in (1, 2, 3, 4):
        for i in range(6):
            slow_token.observe(obs(pid, i, itl=0.9 if pid == 4 else 0.03))
    found = steps(slow_token, 3, {1: 0, 2: 0, 3: 0, 4: 0})
    assert set(found) == {(4, "latency")} and "inter-token" in found[4, "latency"].detail
    exempt = frozenset({4})  # throttled: exempt
    assert steps(slow_token, 3, {1: 0, 2: 0, 3: 0, 4: 0}, exempt) == {}

    alone = Detector()  # one slow process is as slow as the machine
    for i in range(6):
        alone.observe(obs(1, i, itl=0.9))
    assert steps(alone, 5, {1: 0}) == {}


def test_token_rate_against_the_fleet() -> None:
    det = Detector()
    calm = {1: 50.0, 2: 60.0, 3: 55.0}
    assert steps(det, 10, calm) == {}
    found = steps(det, 5, {**calm, 4: 400.0})
    f = found[4, "token_rate"]
    assert set(found) == {(4, "token_rate")} and f.strikes >= 3
    assert f.value > f.threshold >= 3 * 55
    # processes with nothing to decode are not the fleet (they would drag the median to 0)
    idle = Detector()
    assert steps(idle, 10, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 80.0}) == {}


def test_token_rate_against_its_own_baseline() -> None:
    det = Detector()
    assert steps(det, 20, {1: 30.0}) == {}
    found = steps(det, 10, {1: 200.0})
    assert found[1, "token_rate"].threshold == pytest.approx(90.0)  # 3 x its median
    assert "its own recent median: 30.0" in found[1, "token_rate"].detail

    rested = Detector()  # idle, then busy: starting work is no surge
    steps(rested, 20, {1: 0.0})
    assert steps(rested, 10, {1: 500.0}) == {}


def test_a_rule_must_persist() -> None:
    det = Detector(AnomalyConfig(rate_samples=1))
    calm = {1: 50.0, 2: 60.0, 3: 55.0}
    for _ in range(5):
        assert all(f.strikes < 3 for f in det.step(0, {**calm, 4: 500.0}, set()))
        assert all(f.strikes < 3 for f in det.step(0, {**calm, 4: 500.0}, set()))
        assert det.step(0, {**calm, 4: 50.0}, set()) == []


# -- in the kernel ---------------------------------------------------------------------
MSGS = [{"role": "user", "content": "are we there yet?"}]


async def make(home: Path, **settings: Any) -> tuple[Kernel, Caller]:
    device = MockDevice(slots=2, token_delay=0.0005)
    kernel = Kernel(
        Settings(home=home, admin_token="adm", sample_interval_s=QUIET, **settings), [device]
    )
    await kernel.start()
    return kernel, kernel.authenticate("adm")


async def spawn(kernel: Kernel, who: Caller, **args: Any) -> tuple[Process, Caller]:
    made = await kernel.call("proc.spawn", who, {"name": "looper", **args})
    return kernel.procs.get(made["pid"]), kernel.authenticate(made["token"])


async def loop(kernel: Kernel, who: Caller, times: int = 8, max_tokens: int = 5) -> None:
    for _ in range(times):
        req = await kernel.call("llm.chat", who, {"model": "mock", "messages": MSGS,
                                                  "max_tokens": max_tokens})  # fmt: skip
        await req.outcome()


def sample(kernel: Kernel, n: int = 1) -> None:
    for _ in range(n):
        kernel.sysmon.sample()


async def test_a_loop_is_alerted_throttled_and_cleared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel, admin = await make(tmp_path)
    proc, looper = await spawn(kernel, admin, priority=25, max_concurrent=3)
    await loop(kernel, looper)
    sample(kernel, 2)
    assert kernel.anomalies.alerts.active == {}  # two samples: not yet
    with caplog.at_level(logging.WARNING, logger="llmos.kernel.anomaly"):
        sample(kernel)
    [alert] = kernel.anomalies.alerts.of(proc.pid)
    assert (alert.kind, alert.value, alert.threshold, alert.action) == ("loop", 8, 8, "throttle")
    assert alert.message.startswith(f"process {proc.pid} (looper, owner admin) sent the same")
    assert "throttled: priority 0, 1 request at a time" in alert.message
    assert any(f"alert {alert.id}, loop" in r.getMessage() for r in caplog.records)
    assert (proc.priority, proc.max_concurrent) == (0, 1)
    saved = next(p for p in kernel.store.load_processes() if p.pid == proc.pid)
    assert saved.priority == 0

    first = await kernel.call("llm.chat", looper, {"model": "mock", "messages": MSGS,
                                                   "max_tokens": 40})  # fmt: skip
    with pytest.raises(Overloaded) as full:  # one request in flight at most
        await kernel.call("llm.chat", looper, {"model": "mock", "messages": MSGS})
    assert full.value.param == "max_concurrent"
    await first.outcome()
    sample(kernel)  # 40 tokens against a bucket of 2 s x 5 tokens/s: in debt, parked
    assert proc.pid in kernel.scheduler.parking.suspended
    held = await kernel.call("llm.chat", looper, {"model": "mock", "messages": MSGS,
                                                  "max_tokens": 3})  # fmt: skip
    await asyncio.sleep(0.05)
    assert held.started_at is None and kernel.anomalies.alerts.of(proc.pid) == [alert]

    cleared = await kernel.call("alert.clear", admin, {"id": alert.id})
    assert cleared["cleared_at"] is not None and cleared["id"] == alert.id
    assert (proc.priority, proc.max_concurrent) == (25, 3)
    assert proc.pid not in kernel.scheduler.parking.suspended
    assert (await held.outcome()).reason == "length"  # released: it ran
    again = await kernel.call("alert.clear", admin, {"id": alert.id})
    assert again["cleared_at"] == cleared["cleared_at"]  # clearing twice changes nothing
    sample(kernel, 5)
    assert kernel.anomalies.alerts.of(proc.pid) == []  # its windows started afresh
    with pytest.raises(NotFound) as missing:
        await kernel.call("alert.clear", admin, {"id": 999})
    assert missing.value.param == "id"
    with pytest.raises(InvalidRequest) as bad:
        await kernel.call("alert.clear", admin, {"id": "one"})
    assert bad.value.param == "id"
    await kernel.stop()


async def test_the_token_bucket_parks_and_releases(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path)
    proc, who = await spawn(kernel, admin)
    throttles = kernel.anomalies.throttles
    t = throttles.apply(proc, cap_tps=10.0)
    assert t.credit == 20.0 and throttles.apply(proc, 99.0) is t  # the first throttle stays
    throttles.enforce(0.0)
    await loop(kernel, who, times=1, max_tokens=50)
    throttles.enforce(0.1)  # 20 + 1 - 50
    assert t.credit == pytest.approx(-30.0) and proc.pid in kernel.scheduler.parking.suspended
    held = await kernel.call("llm.chat", who, {"model": "mock", "messages": MSGS, "max_tokens": 3})
    throttles.enforce(2.0)
    await asyncio.sleep(0.05)
    assert t.credit == pytest.approx(-10.0) and held.started_at is None
    await kernel.call("proc.signal", admin, {"pid": proc.pid, "signal": "suspend"})
    throttles.enforce(5.0)  # paid off, but its user suspended it: left to them
    assert proc.pid in kernel.scheduler.parking.suspended and held.started_at is None
    await kernel.call("proc.signal", admin, {"pid": proc.pid, "signal": "resume"})
    await held.outcome()
    assert held.output_tokens == 3
    throttles.enforce(0.1)
    assert proc.pid not in kernel.scheduler.parking.suspended and t.credit > 0
    await kernel.stop()


async def test_throttles_survive_a_restart(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path)
    proc, looper = await spawn(kernel, admin, priority=30)
    await loop(kernel, looper)
    sample(kernel, 3)
    [alert] = kernel.anomalies.alerts.of(proc.pid)
    await kernel.stop()

    kernel, admin = await make(tmp_path)
    assert kernel.procs.get(proc.pid).priority == 0
    assert kernel.anomalies.alerts.of(proc.pid)[0].id == alert.id
    assert kernel.anomalies.throttles.by_pid[proc.pid].priority == 30
    await kernel.call("alert.clear", admin, {"id": alert.id})
    assert kernel.procs.get(proc.pid).priority == 30
    assert kernel.procs.get(proc.pid).max_concurrent is None
    await kernel.stop()


async def test_alert_only_mode_leaves_the_process_and_resolves(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path, anomaly_action="alert")
    kernel.anomalies.configure(AnomalyConfig(window_s=2.0, resolve_samples=2))
    proc, looper = await spawn(kernel, admin)
    await loop(kernel, looper)
    sample(kernel, 3)
    [alert] = kernel.anomalies.alerts.of(proc.pid)
    assert alert.action == "alert" and "throttled" not in alert.message
    assert (proc.priority, proc.max_concurrent) == (20, None)
    await asyncio.sleep(2.1)  # the loop leaves the window
    sample(kernel, 2)
    assert kernel.anomalies.alerts.of(proc.pid) == []
    listed = await kernel.call("alert.list", admin, {})
    assert listed["data"][0]["id"] == alert.id and listed["data"][0]["cleared_at"] is not None
    await kernel.stop()


async def test_the_operator_is_alerted_on_never_throttled(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path)
    await loop(kernel, admin)  # the admin token with no process: its implicit one
    sample(kernel, 3)
    [alert] = kernel.anomalies.alerts.active.values()
    proc = kernel.procs.get(alert.pid)
    assert proc.implicit and alert.action == "alert" and proc.priority == 20
    jobs = Process(pid=99, name="admin:jobs", owner="admin", priority=10, implicit=True)
    assert not Anomalies.watched(jobs)  # batch jobs are throughput work by design
    await kernel.stop()


async def test_the_end_of_a_process_clears_its_alerts(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path)
    proc, looper = await spawn(kernel, admin)
    await loop(kernel, looper)
    sample(kernel, 3)
    [alert] = kernel.anomalies.alerts.of(proc.pid)
    await kernel.call("proc.kill", admin, {"pid": proc.pid})
    sample(kernel)
    assert alert.cleared_at is not None and kernel.anomalies.throttles.by_pid == {}
    await kernel.stop()


async def test_anomaly_off_watches_nothing(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path, anomaly=False)
    _, looper = await spawn(kernel, admin)
    await loop(kernel, looper, times=12)
    sample(kernel, 5)
    assert kernel.anomalies.alerts.active == {} and kernel.anomalies.samples == 0
    with pytest.raises(InvalidRequest) as bad:
        Settings(anomaly_action="kill").validate()
    assert bad.value.param == "anomaly_action"
    await kernel.stop()


async def test_alerts_are_seen_by_who_may_see_the_process(tmp_path: Path) -> None:
    kernel, admin = await make(tmp_path)
    users = {}
    for name, role in (("bob", "user"), ("carol", "user"), ("vic", "viewer")):
        await kernel.call("user.add", admin, {"name": name, "role": role})
        made = await kernel.call("token.create", admin, {"user": name})
        users[name] = kernel.authenticate(made["token"])
    proc, looper = await spawn(kernel, users["bob"])
    await loop(kernel, looper)
    sample(kernel, 3)
    fields = {"id", "pid", "owner", "kind", "message", "value", "threshold", "action",
              "created_at", "cleared_at"}  # fmt: skip
    for name, sees in (("bob", 1), ("carol", 0), ("vic", 1)):
        listed = await kernel.call("alert.list", users[name], {"active_only": True})
        top = await kernel.call("sys.top", users[name], {})
        assert len(listed["data"]) == len(top["alerts"]) == sees, name
        assert all(set(a) == fields and a["owner"] == "bob" for a in top["alerts"])
    mine = await kernel.call("alert.list", looper, {})  # the process itself sees its own
    assert [a["pid"] for a in mine["data"]] == [proc.pid]
    for name in ("bob", "vic"):
        with pytest.raises(Forbidden):
            await kernel.call("alert.clear", users[name], {"id": mine["data"][0]["id"]})
    with pytest.raises(InvalidRequest) as bad:
        await kernel.call("alert.list", admin, {"limit": 0})
    assert bad.value.param == "limit"
    with pytest.raises(InvalidRequest) as bad2:
        await kernel.call("alert.list", admin, {"active_only": "yes"})
    assert bad2.value.param == "active_only"
    await kernel.stop()
