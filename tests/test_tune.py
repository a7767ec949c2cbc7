"""Auto-tuning on the mock device: the hill-climb against known optima, the context
rule, the hold/preempt/reconfigure/resume mechanism under load (nothing lost, outputs
unchanged), the recorded decisions and online tuning. The front ends (syscalls,
routes, SDK, CLI) are in test_tune_api.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import MockDevice
from llmos.errors import InvalidRequest, Overloaded
from llmos.kernel import Kernel, ReqState, calibrate
from llmos.kernel.request import Request
from llmos.kernel.tokens import Caller
from llmos.kernel.tune_search import (
    LATENCY_SLACK,
    MIN_CONTEXT,
    MIN_ROWS,
    Measure,
    Space,
    TuneConfig,
    context_for,
    hill_climb,
)
from llmos.params import Settings


def m(tps: float, p95: float = 1.0) -> Measure:
    return Measure(
        tokens_per_s=tps, p50_s=p95 / 2, p95_s=p95, ttft_p50_s=0.1, requests=8, tokens=384,
        seconds=1.0,
    )  # fmt: skip


def fake(table: Callable[[TuneConfig], Measure]) -> tuple[Callable[..., Any], list[TuneConfig]]:
    """A measuring function from a table, and the list of what it was asked."""
    asked: list[TuneConfig] = []

    async def measure(config: TuneConfig) -> Measure:
        asked.append(config)
        return table(config)

    return measure, asked


START = TuneConfig(slots=1, context_length=2048, batch=None)


# -- the search ----------------------------------------------------------------------
async def test_hill_climb_finds_the_known_optimum() -> None:
    # Throughput peaks at 4 slots and batch 256; the climb must walk there from 1/default.
    def table(c: TuneConfig) -> Measure:
        batch = {None: 0.0, 128: 8.0, 256: 12.0, 512: 6.0}[c.batch]
        return m(100 - 10 * abs(c.slots - 4) + batch)

    measure, asked = fake(table)
    climb = await hill_climb(START, measure, Space(), budget_s=1e9)
    assert climb.best.config == TuneConfig(4, 2048, 256)
    assert climb.baseline.config == START and asked[0] == START
    assert climb.stopped == "local optimum"
    assert len(asked) == len(set(asked)), "no setting is measured twice"
    assert all(Space().allows(c) for c in asked)
    assert [t.config for t in climb.trials] == asked


async def test_hill_climb_keeps_latency_within_the_bound() -> None:
    # 8 slots give the most throughput, but its p95 is past the bound: 4 is chosen.
    def table(c: TuneConfig) -> Measure:
        if c.slots >= 8:
            return m(500, p95=LATENCY_SLACK * 2.0 + 0.1)
        return m(100 * c.slots, p95=2.0)

    measure, _ = fake(table)
    climb = await hill_climb(TuneConfig(1, 1024, 512), measure, Space(), budget_s=1e9)
    assert climb.best.config.slots == 4


async def test_hill_climb_ignores_gains_within_the_noise() -> None:
    measure, asked = fake(lambda c: m(100 + c.slots))  # +1% per step: noise
    climb = await hill_climb(TuneConfig(2, 1024, 256), measure, Space(), budget_s=1e9)
    assert climb.best.config == TuneConfig(2, 1024, 256) and climb.stopped == "local optimum"
    assert len(asked) == 1 + 4  # the baseline, then its four neighbours


async def test_hill_climb_stops_at_the_bounds_and_the_time_budget() -> None:
    measure, asked = fake(lambda c: m(10.0 * c.slots))
    space = Space(max_slots=4, batches=(256,))
    climb = await hill_climb(TuneConfig(1, 512, 256), measure, space, budget_s=1e9)
    assert climb.best.config.slots == 4 and climb.stopped == "local optimum"
    assert max(c.slots for c in asked) == 4

    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731 - each reading is one second later
    measure, asked = fake(lambda c: m(10.0 * c.slots))
    climb = await hill_climb(START, measure, Space(), budget_s=12, reserve=1, clock=clock)
    assert climb.stopped == "time budget"
    assert 1 < len(asked) < 6
    assert climb.best.measure.tokens_per_s == max(t.measure.tokens_per_s for t in climb.trials)


async def test_a_trial_that_would_overrun_the_budget_is_abandoned() -> None:
    async def measure(c: TuneConfig) -> Measure:
        if c != START:
            await asyncio.sleep(30)
        return m(100)

    climb = await asyncio.wait_for(hill_climb(START, measure, Space(), budget_s=0.3), 10)
    assert climb.stopped == "time budget" and [t.config for t in climb.trials] == [START]


def test_neighbours_stay_within_bounds() -> None:
    space = Space(kv_budget=16 * 1024)
    assert set(space.neighbours(TuneConfig(1, 1024, None))) == {
        TuneConfig(2, 1024, None),
        TuneConfig(1, 1024, 512),
    }
    assert set(space.neighbours(TuneConfig(16, 1024, 128))) == {
        TuneConfig(8, 1024, 128),
        TuneConfig(16, 1024, 256),
    }
    assert TuneConfig(8, 4096, 256) not in space.neighbours(TuneConfig(4, 4096, 256))  # KV
    assert TuneConfig(2, 1024, 512) in space.neighbours(TuneConfig(2, 1024, 1000))


def test_context_rule() -> None:
    few = [100] * (MIN_ROWS - 1)
    assert context_for(few, 0, 2048, 8192) == 2048  # too little evidence: unchanged
    assert context_for([100] * MIN_ROWS, 0, 2048, 8192) == MIN_CONTEXT  # 125 -> at least 512
    lengths = [600] * 99 + [3000]  # p99 ~ 600..3000; with headroom a power of two
    size = context_for(lengths, 0, 2048, 8192)
    assert size & (size - 1) == 0 and size >= 1.25 * 600
    assert context_for([7000] * 50, 0, 2048, 8192) == 8192  # the model's training context
    assert context_for([100] * 50, 1500, 2048, 8192) == 1500  # a waiting request's need


# -- the mechanism -------------------------------------------------------------------
async def kernel_on(home: Path, **dev: Any) -> tuple[Kernel, MockDevice, Caller]:
    device = MockDevice(**{"slots": 2, "token_delay": 0.002, "context_length": 2048, **dev})
    kernel = Kernel(Settings(home=home, admin_token="adm"), [device])
    await kernel.start()
    return kernel, device, kernel.authenticate("adm")


def short_measure(kernel: Kernel, tokens: int = 8) -> None:
    """Calibrate with 8-token generations (the mechanism is what these tests check)."""

    async def measure(dev: Any, burst: list[list[int]]) -> Measure:
        return await calibrate.measure(dev, burst, tokens=tokens)

    kernel.tuner.measure = measure


async def chats(kernel: Kernel, who: Caller, n: int, tokens: int = 40) -> list[Request]:
    out = []
    for i in range(n):
        args = {"model": "mock", "messages": [{"role": "user", "content": f"q{i}"}]}
        out.append(await kernel.call("llm.chat", who, {**args, "max_tokens": tokens}))
    return out


async def test_a_retune_under_load_loses_and_changes_nothing(tmp_path: Path) -> None:
    ref_kernel, _, ref_admin = await kernel_on(tmp_path / "ref", slots=2)
    ref = await chats(ref_kernel, ref_admin, 6)
    await asyncio.gather(*(r.outcome() for r in ref))
    await ref_kernel.stop()

    kernel, dev, admin = await kernel_on(tmp_path / "tuned", slots=2, token_delay=0.004)
    short_measure(kernel)
    reqs = await chats(kernel, admin, 6)
    while not all(r.output_tokens for r in reqs[:2]):  # two are mid-answer
        await asyncio.sleep(0.005)
    decision = await kernel.call("tune.run", admin, {"max_seconds": 10})
    done = await asyncio.gather(*(r.outcome() for r in reqs))
    assert all(d.error is None for d in done)
    assert [r.text for r in reqs] == [r.text for r in ref]  # greedy: identical
    assert all(r.state == ReqState.FINISHED_LENGTH and r.output_tokens == 40 for r in reqs)
    assert sum(r.preemptions for r in reqs) >= 2  # the running ones left their slots
    assert dev.reconfigurations, "the mock refuses a reconfigure while anything runs"
    assert decision["kept"] and dev.slots == decision["after"]["slots"] > 2
    assert kernel.admission.slots == dev.slots
    assert not kernel.scheduler.paused
    await kernel.stop()


async def test_hold_pauses_dispatch_and_resumes_it(tmp_path: Path) -> None:
    kernel, dev, admin = await kernel_on(tmp_path, slots=1, token_delay=0.002)
    async with calibrate.hold(kernel, dev):
        (req,) = await chats(kernel, admin, 1, tokens=5)
        await asyncio.sleep(0.05)
        assert req.state == ReqState.WAITING and not kernel.scheduler.running["mock0"]
    assert (await req.outcome()).error is None and req.output_tokens == 5
    await kernel.stop()


async def test_requests_that_cannot_switch_are_waited_for_within_a_bound(tmp_path: Path) -> None:
    kernel, dev, admin = await kernel_on(tmp_path, slots=1, token_delay=0.01)
    args = {"model": "mock", "prompt": "x", "max_tokens": 200, "json_schema": {"type": "object"}}
    req = await kernel.call("llm.complete", admin, args)
    await asyncio.sleep(0.03)
    with pytest.raises(Overloaded) as e:
        async with calibrate.hold(kernel, dev, drain_s=0.1):
            pass
    assert e.value.param == "device" and e.value.code == "device_busy"
    assert not kernel.scheduler.paused and req.preemptions == 0  # it kept its slot
    kernel.cancel(req)
    await req.outcome()
    await kernel.stop()


async def test_context_is_sized_from_telemetry_but_never_below_a_waiting_need(
    tmp_path: Path,
) -> None:
    kernel, dev, admin = await kernel_on(tmp_path, slots=2, token_delay=0.001)
    for i in range(MIN_ROWS + 5):
        row = {"request_id": f"r{i}", "owner": "admin", "pid": 1, "model": "mock"}
        row |= {"device": "mock0", "kind": "chat", "priority": 20, "prompt_tokens": 60}
        row |= {"output_tokens": 40, "cached_tokens": 0, "max_tokens": 40, "queue_wait_s": 0.0}
        row |= {"ttft_s": 0.01, "total_s": 0.1, "finish_reason": "length", "created_at": 0.0}
        kernel.store.add_telemetry(row)
    decision = await kernel.call("tune.run", admin, {"dry_run": True, "max_seconds": 5})
    assert decision["after"]["context_length"] == MIN_CONTEXT  # 1.25 x 100 -> 512
    assert dev.context_length == 2048 and not decision["kept"]  # a dry run applies nothing

    big: list[Request] = []
    calls = 0

    async def measure(d: Any, burst: list[list[int]]) -> Measure:
        nonlocal calls
        calls += 1
        if calls == 1:  # a request arrives while the device is held; it needs 1,500
            args = {"model": "mock", "prompt": "y" * 100, "max_tokens": 1400}
            big.append(await kernel.call("llm.complete", admin, args))
        return await calibrate.measure(d, burst, tokens=4)

    kernel.tuner.measure = measure
    decision = await kernel.call("tune.run", admin, {"max_seconds": 5})
    assert decision["kept"] and dev.context_length >= 1500
    assert (await big[0].outcome()).error is None and big[0].output_tokens == 1400
    await kernel.stop()


async def test_settings_worse_than_before_are_reverted_and_recorded(tmp_path: Path) -> None:
    kernel, dev, admin = await kernel_on(tmp_path, slots=2)
    for i in range(MIN_ROWS):
        row = {"request_id": f"r{i}", "owner": "a", "pid": 1, "model": "mock", "device": "mock0"}
        row |= {"kind": "chat", "priority": 20, "prompt_tokens": 50, "output_tokens": 50}
        row |= {"cached_tokens": 0, "max_tokens": 50, "queue_wait_s": 0.0, "ttft_s": 0.01}
        row |= {"total_s": 0.1, "finish_reason": "stop", "created_at": 0.0}
        kernel.store.add_telemetry(row)

    async def measure(d: Any, burst: list[list[int]]) -> Measure:
        # 4 slots look best in the climb; with the context sized down they are slow.
        if d.slots == 4:
            return m(50.0 if d.context_length == MIN_CONTEXT else 300.0)
        return m(100.0)

    kernel.tuner.measure = measure
    decision = await kernel.call("tune.run", admin, {})
    assert not decision["kept"] and "worse than before" in decision["reason"]
    assert decision["after"] == {"slots": 4, "context_length": MIN_CONTEXT, "batch": None}
    assert decision["measured_after"]["tokens_per_s"] == 50.0
    assert (dev.slots, dev.context_length) == (2, 2048)  # the old settings are back
    (row,) = await kernel.call("tune.history", admin, {})
    assert row["id"] == decision["id"] and row["kept"] is False
    assert row["trials"][-1]["config"] == decision["after"]
    await kernel.stop()


async def test_decisions_are_recorded_with_their_measured_effect(tmp_path: Path) -> None:
    kernel, dev, admin = await kernel_on(tmp_path, slots=1)
    short_measure(kernel)
    first = await kernel.call("tune.run", admin, {"max_seconds": 10})
    second = await kernel.call("tune.run", admin, {"dry_run": True, "max_seconds": 10})
    rows = await kernel.call("tune.history", admin, {})
    assert [r["id"] for r in rows] == [second["id"], first["id"]]  # newest first
    r = rows[1]
    assert r["trigger"] == "manual" and r["device"] == "mock0" and r["kept"] is True
    assert r["before"] == {"slots": 1, "context_length": 2048, "batch": None}
    assert r["after"]["slots"] == dev.slots > 1
    assert r["measured_before"]["tokens_per_s"] > 0 and r["measured_before"]["requests"] >= 8
    assert r["measured_after"]["tokens_per_s"] > r["measured_before"]["tokens_per_s"]
    assert r["trials"][0]["config"] == r["before"] and r["trials"][0]["step"] == 0
    assert rows[0]["kept"] is False and "dry run" in rows[0]["reason"]
    assert await kernel.call("tune.history", admin, {"limit": 1}) == rows[:1]
    assert await kernel.call("tune.history", admin, {"device": "other"}) == []
    tuning = kernel.store.db.execute("SELECT COUNT(*) FROM tuning").fetchone()[0]
    assert tuning == 2
    await kernel.stop()


async def test_one_tuning_at_a_time(tmp_path: Path) -> None:
    kernel, _, admin = await kernel_on(tmp_path)
    started = asyncio.Event()

    async def measure(d: Any, burst: list[list[int]]) -> Measure:
        started.set()
        await asyncio.sleep(0.2)
        return m(100.0)

    kernel.tuner.measure = measure
    first = asyncio.create_task(kernel.call("tune.run", admin, {"max_seconds": 5}))
    await started.wait()
    with pytest.raises(Overloaded) as e:
        await kernel.call("tune.run", admin, {})
    assert e.value.code == "tune_busy" and e.value.param == "device"
    assert (await first)["kept"]
    await kernel.stop()


async def test_autotune_start_calibrates_in_the_background(tmp_path: Path) -> None:
    device = MockDevice(slots=1, token_delay=0.001)
    settings = Settings(home=tmp_path, admin_token="adm", autotune="start")
    kernel = Kernel(settings, [device])
    short_measure(kernel, tokens=4)
    await kernel.start()
    for _ in range(500):
        if kernel.tuner.log.list():
            break
        await asyncio.sleep(0.02)
    (row,) = kernel.tuner.log.list()
    assert row["trigger"] == "calibrate" and row["kept"] and device.slots > 1
    await kernel.stop()


@pytest.mark.parametrize(
    ("field", "value"), [("autotune", "always"), ("tune_interval_s", 0.5)]
)  # fmt: skip
def test_autotune_settings_are_validated(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as e:
        Settings(**{field: value}).validate()
    assert e.value.param == field


# -- online --------------------------------------------------------------------------
class SlowWhenWide(MockDevice):
    """More slots make every token slower than the slots gain: a change to undo."""

    async def reconfigure(self, *, slots: int, context_length: int, batch: int | None) -> None:
        await super().reconfigure(slots=slots, context_length=context_length, batch=batch)
        self.token_delay = 0.002 if slots == 1 else 0.02


async def online_kernel(home: Path, dev: MockDevice) -> tuple[Kernel, Caller]:
    settings = Settings(home=home, admin_token="adm", sample_interval_s=0.05)
    kernel = Kernel(settings, [dev])
    await kernel.start()
    kernel.tuner.window_s = 0.5
    return kernel, kernel.authenticate("adm")


async def keep_busy(kernel: Kernel, who: Caller, stop: asyncio.Event) -> None:
    while not stop.is_set():
        reqs = await chats(kernel, who, 6, tokens=10)
        await asyncio.gather(*(r.outcome() for r in reqs))


@pytest.mark.parametrize(("device", "kept"), [(MockDevice, True), (SlowWhenWide, False)])
async def test_online_adds_slots_under_load_and_reverts_a_worse_change(
    tmp_path: Path, device: type[MockDevice], kept: bool
) -> None:
    dev = device(slots=1, token_delay=0.002)
    kernel, admin = await online_kernel(tmp_path, dev)
    stop = asyncio.Event()
    load = asyncio.create_task(keep_busy(kernel, admin, stop))
    await asyncio.sleep(0.6)  # a window of saturated samples
    row = await kernel.tuner.online_step(dev)
    stop.set()
    await load
    assert row is not None and row["trigger"] == "online" and row["kept"] is kept
    assert row["before"]["slots"] == 1 and row["after"]["slots"] == 2
    assert "more slots" in row["reason"]
    assert row["measured_before"]["tokens_per_s"] > 0
    assert dev.slots == (2 if kept else 1)
    assert kernel.tuner.log.list()[0]["id"] == row["id"]
    await kernel.stop()


async def test_online_gives_back_idle_slots_and_leaves_a_fitting_device_alone(
    tmp_path: Path,
) -> None:
    dev = MockDevice(slots=4, token_delay=0.002)
    kernel, _ = await online_kernel(tmp_path, dev)
    await asyncio.sleep(0.3)  # idle samples
    row = await kernel.tuner.online_step(dev)
    assert row is not None and row["after"]["slots"] == 2 and "fewer slots" in row["reason"]
    assert row["kept"] and dev.slots == 2  # nothing to serve: not worse
    kernel.sysmon.history.clear()
    assert await kernel.tuner.online_step(dev) is None  # no samples: no evidence
    await kernel.stop()
