"""Placement (kernel/placement.py): which free device of a route a request runs on.
Resume, then affinity, then least-loaded; `least-loaded` mode turns the first two off.
On several mock devices of one model (deterministic output, no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import Device, MockDevice
from llmos.errors import InvalidRequest
from llmos.kernel import Caller, Kernel, ReqState, Request
from llmos.kernel.placement import Placement
from llmos.params import Settings
from tests._faults import assert_books_balance, done, reference, until


# -- the rules alone ---------------------------------------------------------------------
@dataclass
class Req:
    pid: int
    device: str | None = None
    dispatches: int = 0


def fleet(*running: int, slots: int = 4) -> tuple[list[Device], dict[str, Sized]]:
    devs: list[Device] = [MockDevice(name=f"d{i}", slots=slots) for i in range(len(running))]
    return devs, {d.name: [object()] * n for d, n in zip(devs, running, strict=True)}


def test_least_loaded_then_fewest_running_then_declared_order() -> None:
    p = Placement()
    devs, running = fleet(2, 1, 1)
    assert p.choose(Req(1), devs, running).name == "d1"  # d1, d2 tie: declared first
    big = MockDevice(name="big", slots=8)
    running["big"] = [object()] * 2  # load 0.25, like d1 and d2, but more running
    assert p.choose(Req(2), [big, *devs], running).name == "d1"
    assert p.counts == {"least-loaded": 2}


def test_affinity_holds_within_the_slack_and_yields_beyond_it() -> None:
    p = Placement(slack=0.5)
    devs, running = fleet(0, 0)
    assert p.choose(Req(7), devs, running).name == "d0"
    running["d0"] = [object()]  # 0.25 busier than d1: within the slack
    assert p.choose(Req(7), devs, running).name == "d0"
    running["d0"] = [object()] * 2  # 0.5 busier: the slack itself is overloaded
    assert p.choose(Req(7), devs, running).name == "d1"
    assert p.counts == {"least-loaded": 2, "affinity": 1}
    assert p.last[7] == "d1"  # its affinity follows where it ran last


def test_resume_goes_before_affinity_and_needs_its_device_free() -> None:
    p = Placement()
    devs, running = fleet(1, 0, 0)
    p.last[3] = "d2"
    moved = Req(3, device="d0", dispatches=2)  # preempted on d0; its process last on d2
    assert p.choose(moved, devs, running).name == "d0"
    assert p.last[3] == "d0"  # where it ran last, now
    p.last[3] = "d2"
    assert p.choose(moved, devs[1:], running).name == "d2"  # d0 not free: affinity
    assert p.choose(Req(3, device="d0", dispatches=0), devs, running).name == "d2"
    assert p.counts == {"resume": 1, "affinity": 2}


def test_least_loaded_mode_has_no_preferences() -> None:
    p = Placement("least-loaded")
    devs, running = fleet(1, 0)
    p.last[1] = "d0"
    assert p.choose(Req(1, device="d0", dispatches=1), devs, running).name == "d1"
    assert p.counts == {"least-loaded": 1}


def test_a_device_that_leaves_is_forgotten() -> None:
    p = Placement()
    devs, running = fleet(0, 0)
    for pid in (1, 2):
        p.choose(Req(pid), devs[:1], running)
    p.choose(Req(3), devs[1:], running)
    p.forget_device("d0")
    assert p.last == {3: "d1"}


@pytest.mark.parametrize("mode", ["nearest", "", "AFFINITY", None, 3])
def test_an_unknown_placement_is_refused(tmp_path: Path, mode: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        Placement(mode)
    assert err.value.param == "placement" and "affinity" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        Settings(home=tmp_path, placement=mode).validate()
    assert err.value.param == "placement" and "least-loaded" in err.value.message


# -- in the kernel -----------------------------------------------------------------------
async def boot(home: Path, n: int = 2, slots: int = 4, **settings: Any) -> Kernel:
    devices: list[Device] = [
        MockDevice(name=f"mock{i}", slots=slots, token_delay=0.005) for i in range(n)
    ]
    kernel = Kernel(Settings(home=home, admin_token="adm", **settings), devices)
    await kernel.start()
    return kernel


async def procs(k: Kernel, n: int) -> list[Caller]:
    admin = k.authenticate("adm")
    out = []
    for i in range(n):
        spawned = await k.call("proc.spawn", admin, {"name": f"p{i}"})
        out.append(k.authenticate(spawned["token"]))
    return out


async def chat(k: Kernel, who: Caller, n: int = 8, text: str = "hello") -> Request:
    args = {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": n}
    req: Request = await k.call("llm.chat", who, args)
    return req


async def test_least_loaded_spreads_requests_over_the_devices(tmp_path: Path) -> None:
    k = await boot(tmp_path, n=3, slots=2)
    callers = await procs(k, 6)
    reqs = [await chat(k, c, 40) for c in callers]
    assert {len(r) for r in k.scheduler.running.values()} == {2}
    assert [r.device for r in reqs] == ["mock0", "mock1", "mock2"] * 2
    await asyncio.gather(*(done(r) for r in reqs))
    assert all(r.text == reference(r) for r in reqs)
    assert k.scheduler.placement.counts == {"least-loaded": 6}
    assert_books_balance(k)
    await k.stop()


async def warm(k: Kernel, callers: list[Caller]) -> None:
    """Each caller's one request, alone, so each has run on mock0 (the tie's first)."""
    for c in callers:
        req = await chat(k, c, 2)
        await done(req)
        assert req.device == "mock0"


async def test_a_process_follows_its_last_device_until_that_one_is_overloaded(
    tmp_path: Path,
) -> None:
    k = await boot(tmp_path)
    k.scheduler.placement.slack = 0.5
    a, b, c = await procs(k, 3)
    await warm(k, [a, b, c])
    first = await chat(k, a, 200)  # a's affinity wins over the idle mock1 ...
    second = await chat(k, b, 200)  # ... and b's: 0.25 busier is within the slack
    assert (first.device, second.device) == ("mock0", "mock0")
    third = await chat(k, c, 200)  # 0.5 busier than mock1: overloaded, least-loaded wins
    assert third.device == "mock1"
    # the 3 warm-up requests had no last device; then 2 followed it, 1 could not
    assert k.scheduler.placement.counts == {"least-loaded": 3 + 1, "affinity": 2}
    for r in (first, second, third):
        k.cancel(r)
    await k.stop()


async def test_least_loaded_mode_ignores_affinity(tmp_path: Path) -> None:
    k = await boot(tmp_path, placement="least-loaded")
    a, b = await procs(k, 2)
    await warm(k, [a, b])
    held = await chat(k, b, 200)
    assert held.device == "mock0"
    again = await chat(k, a, 200)  # its affinity (mock0) would be within the slack
    assert again.device == "mock1"
    assert set(k.scheduler.placement.counts) == {"least-loaded"}
    for r in (held, again):
        k.cancel(r)
    await k.stop()


async def test_a_preempted_request_resumes_on_its_old_device_when_it_is_free(
    tmp_path: Path,
) -> None:
    k = await boot(tmp_path, n=2, slots=1, policy="rr", quantum=3)
    callers = await procs(k, 4)
    choices: list[tuple[str | None, int, list[str], str]] = []
    choose = k.scheduler.placement.choose

    def watched(req: Any, free: Any, running: Any) -> Device:
        old, dispatches = req.device, req.dispatches
        dev = choose(req, free, running)
        choices.append((old, dispatches, [d.name for d in free], dev.name))
        return dev

    k.scheduler.placement.choose = watched  # type: ignore[method-assign]
    reqs = [await chat(k, c, 18, text=f"text {i}") for i, c in enumerate(callers)]
    await asyncio.gather(*(done(r) for r in reqs))
    assert all(r.state == ReqState.FINISHED_LENGTH for r in reqs)
    assert [r.text for r in reqs] == [reference(r) for r in reqs]  # switches changed nothing
    assert all(r.preemptions >= 1 for r in reqs)
    resumes = [c for c in choices if c[1] > 0]
    assert resumes and all(new == old for old, _, free, new in resumes if old in free)
    assert k.scheduler.placement.counts["resume"] == sum(1 for c in resumes if c[0] in c[2]) > 0
    assert k.sched_info()["resume_cache_hit"] > 0.9  # on the old device, its prefix is cached
    assert_books_balance(k)
    await k.stop()


async def test_a_draining_device_gets_nothing(tmp_path: Path) -> None:
    k = await boot(tmp_path, n=2, slots=1)
    drained = k.devices[0]
    assert isinstance(drained, MockDevice)
    k.scheduler.draining.add(drained.name)
    callers = await procs(k, 3)
    reqs = [await chat(k, c, 6) for c in callers]
    assert k.scheduler.num_running() == 1 and k.scheduler.num_waiting() == 2  # one slot left
    await asyncio.gather(*(done(r) for r in reqs))
    assert {r.device for r in reqs} == {"mock1"} and drained.started_prompts == []
    assert all(r.text == reference(r) for r in reqs)
    await k.stop()


async def test_an_attached_device_joins_its_route_or_gets_its_own(tmp_path: Path) -> None:
    k = await boot(tmp_path, n=1, slots=1)
    s = k.scheduler
    twin = MockDevice(name="twin", slots=1, token_delay=0.005)
    seeing = MockDevice(name="eyes", slots=1, capabilities=("text", "vision"))
    await twin.start()
    await seeing.start()
    s.attach(twin)
    s.attach(seeing)
    assert s.routes["twin"] == s.routes["mock0"] == "mock"
    assert s.routes["eyes"] == "mock+text+vision" and s.queue("mock+text+vision") is not None
    callers = await procs(k, 3)
    reqs = [await chat(k, c, 30) for c in callers]
    # text requests take the least busy route (capabilities.pick); each runs on its own
    assert [(r.route, r.device) for r in reqs] == [
        ("mock", "mock0"),
        ("mock+text+vision", "eyes"),
        ("mock", "twin"),
    ]
    await asyncio.gather(*(done(r) for r in reqs))
    assert all(r.text == reference(r) for r in reqs)
    s.draining.add("twin")
    await until(lambda: not s.running["twin"])
    s.detach(twin)
    assert twin not in s.devices and "twin" not in s.draining
    assert all(dev != "twin" for dev in s.placement.last.values())
    late = await chat(k, callers[0], 4)
    await done(late)
    assert late.device == "mock0"
    await k.stop()
