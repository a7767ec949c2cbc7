"""The fleet and the autoscaler (kernel/fleet.py, kernel/autoscale.py) on mock replicas:
scale up under a queue, drain on scale-down without losing a request, stay between
min and max, keep the cooldown, survive a replica that does not start, replace a dead
one, and refuse bad orders. Output is deterministic, so "nothing lost" is checked
token for token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import Device, MockDevice
from llmos.errors import DeviceError, InvalidRequest, NotFound
from llmos.kernel import Caller, Kernel, ReqState, Request
from llmos.kernel.fleet import Group, ScalePolicy
from llmos.params import JOBS_PER_SLOT, Settings
from tests._faults import FAST, assert_books_balance, done, reference, until

ADMIN = "adm"


def replica(slots: int, delay: float = 0.01) -> Any:
    def make(name: str) -> Device:
        return MockDevice(name=name, slots=slots, token_delay=delay)

    return make


async def boot(
    home: Path,
    policy: ScalePolicy,
    members: int = 1,
    slots: int = 1,
    make: Any = None,
    **settings: Any,
) -> tuple[Kernel, Group]:
    make = make or replica(slots)
    devices = [MockDevice(name=f"g-{i}", slots=slots, token_delay=0.01) for i in range(members)]
    group = Group("g", policy, make, list(devices))
    options = {**FAST, "autoscale_interval_s": 0.05, **settings}
    kernel = Kernel(Settings(home=home, admin_token=ADMIN, **options), list(devices), [group])
    await kernel.start()
    return kernel, group


async def procs(k: Kernel, n: int) -> list[Caller]:
    admin = k.authenticate(ADMIN)
    out = []
    for i in range(n):
        spawned = await k.call("proc.spawn", admin, {"name": f"p{i}"})
        out.append(k.authenticate(spawned["token"]))
    return out


async def chat(k: Kernel, who: Caller, n: int, text: str = "hello") -> Request:
    args = {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": n}
    req: Request = await k.call("llm.chat", who, args)
    return req


def actions(k: Kernel) -> list[tuple[str, str | None]]:
    """The scaling events, oldest first: (action, device)."""
    return [(e["action"], e["device"]) for e in reversed(k.fleet.events(limit=1000))]


async def finish_all(reqs: list[Request]) -> None:
    await asyncio.gather(*(done(r) for r in reqs))
    for r in reqs:
        assert r.state == ReqState.FINISHED_LENGTH, (r.id, r.state, r.error)
        assert r.text == reference(r)  # every token, as an uninterrupted run makes them


async def test_a_queue_adds_a_replica_and_requests_run_on_both(tmp_path: Path) -> None:
    k, g = await boot(tmp_path, ScalePolicy(min=1, max=2, cooldown_s=0.0, idle_s=60))
    callers = await procs(k, 4)
    reqs = [await chat(k, c, 25, text=f"q{i}") for i, c in enumerate(callers)]
    await until(lambda: ("up", "g-1") in actions(k))
    [event] = k.fleet.events(group="g")
    assert event["replicas"] == 2 and event["reason"].endswith(" waiting on 1 slots")
    assert event["detail"]["start_s"] >= 0 and event["group"] == "g"
    await finish_all(reqs)
    assert {r.device for r in reqs} == {"g-0", "g-1"}
    assert [d.name for d in g.members] == ["g-0", "g-1"] and k.admission.slots == 2
    more = [await chat(k, c, 10) for c in callers]  # a queue again: but 2 is the max
    await finish_all(more)
    assert actions(k) == [("up", "g-1")]
    [status] = (await k.call("cluster.status", k.authenticate(ADMIN)))["groups"]
    assert (status["replicas"], status["devices"], status["draining"]) == (2, ["g-0", "g-1"], [])
    assert_books_balance(k)
    await k.stop()


async def test_scale_down_drains_a_busy_replica_and_loses_nothing(tmp_path: Path) -> None:
    policy = ScalePolicy(min=1, max=2, cooldown_s=0.0, idle_s=0.2)
    k, g = await boot(tmp_path, policy, members=2, slots=4)
    callers = await procs(k, 3)
    reqs = [await chat(k, c, 80, text=f"long {i}") for i, c in enumerate(callers)]
    on_victim = [r for r in reqs if r.device == "g-1"]
    assert len(on_victim) == 1  # 3 of 8 slots busy: idle enough to shrink
    await until(lambda: ("down", "g-1") in actions(k))
    [down] = k.fleet.events(group="g")
    assert down["detail"]["moved"] == 1 and down["replicas"] == 1
    assert not on_victim[0].state.finished  # it was moved, not run to its end there
    await finish_all(reqs)
    assert on_victim[0].device == "g-0" and on_victim[0].dispatches >= 2
    assert [d.name for d in g.members] == ["g-0"] and [d.name for d in k.devices] == ["g-0"]
    assert "g-1" not in k.scheduler.draining and k.admission.slots == 4
    await asyncio.sleep(0.5)  # idle for longer than idle_s again: but 1 is the minimum
    assert actions(k) == [("down", "g-1")] and len(k.fleet.active(g)) == 1
    assert_books_balance(k)
    await k.stop()


async def test_decisions_keep_the_cooldown_and_stop_at_the_max(tmp_path: Path) -> None:
    policy = ScalePolicy(min=1, max=3, cooldown_s=0.3, idle_s=60)
    k, _ = await boot(tmp_path, policy)
    callers = await procs(k, 8)
    reqs = [await chat(k, c, 40) for c in callers]
    await until(lambda: len(actions(k)) == 2)
    await finish_all(reqs)
    ups = list(reversed(k.fleet.events(group="g")))
    assert [(e["action"], e["device"], e["replicas"]) for e in ups] == [
        ("up", "g-1", 2),
        ("up", "g-2", 3),
    ]
    assert ups[1]["at"] - ups[0]["at"] >= 0.29  # no decision within the cooldown (0.3 s)
    assert len(actions(k)) == 2  # the queue lasted, the group stayed at its max
    await k.stop()


class Broken(MockDevice):
    async def start(self) -> None:
        raise DeviceError(f"{self.name}: no GPU left")


class Stuck(MockDevice):
    closed = False

    async def start(self) -> None:
        await asyncio.sleep(60)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("kind", "why"), [(Broken, "DeviceError: g-1: no GPU left"), (Stuck, "TimeoutError")]
)
async def test_a_replica_that_does_not_start_is_a_failed_event(
    tmp_path: Path, kind: type[MockDevice], why: str
) -> None:
    policy = ScalePolicy(min=1, max=2, cooldown_s=0.2, idle_s=60, start_timeout_s=0.1)
    k, g = await boot(tmp_path, policy, make=lambda name: kind(name=name, slots=1))
    callers = await procs(k, 3)
    reqs = [await chat(k, c, 20) for c in callers]
    await until(lambda: actions(k)[:1] == [("failed", "g-1")])
    failed = k.fleet.events(group="g")[-1]
    assert failed["replicas"] == 1 and failed["reason"].endswith(f"did not start: {why}")
    await finish_all(reqs)  # the group serves on with what it has
    assert {r.device for r in reqs} == {"g-0"} and [d.name for d in g.members] == ["g-0"]
    assert {a for a, _ in actions(k)} == {"failed"} and not k.fleet.busy(g)
    await k.stop()


async def test_a_stop_during_a_start_leaves_no_replica_behind(tmp_path: Path) -> None:
    made: list[Stuck] = []

    def make(name: str) -> Device:
        made.append(Stuck(name=name, slots=1))
        return made[-1]

    k, g = await boot(tmp_path, ScalePolicy(min=1, max=2, cooldown_s=60, idle_s=60), make=make)
    order = asyncio.create_task(k.fleet.scale_to(g, 2, "by hand"))
    await until(lambda: bool(made))
    order.cancel()
    with pytest.raises(asyncio.CancelledError):
        await order
    assert made[0].closed and [d.name for d in g.members] == ["g-0"]
    assert not k.fleet.busy(g) and k.fleet.events() == []
    await k.stop()


async def test_a_dead_replica_is_replaced_and_its_request_completes(tmp_path: Path) -> None:
    policy = ScalePolicy(min=2, max=2, cooldown_s=0.0, idle_s=60, dead_after_s=0.1)
    k, g = await boot(tmp_path, policy, members=2)
    dead = g.members[0]
    assert isinstance(dead, MockDevice)
    [caller] = await procs(k, 1)
    req = await chat(k, caller, 60)
    assert req.device == "g-0"
    await until(lambda: len(req.snapshot.generated_ids) >= 5)
    dead.kill()  # mid-generation: the next token fails, the health probe says no
    await until(lambda: [a for a, _ in actions(k)] == ["replace", "replace"])
    removed, added = reversed(k.fleet.events(group="g"))
    assert (removed["device"], added["device"]) == ("g-0", "g-2")
    assert "g-0 is down" in removed["reason"] and added["reason"] == "replacing g-0"
    await finish_all([req])
    assert (req.faults, req.device) == (1, "g-1")
    assert [d.name for d in g.members] == ["g-1", "g-2"] and dead not in k.devices
    after = await chat(k, caller, 10)  # the new replica takes work
    await finish_all([after])
    assert k.scheduler.dispatched["g-2"] + k.scheduler.dispatched["g-1"] >= 2
    await k.stop()


async def test_scale_to_adds_and_drains_on_order(tmp_path: Path) -> None:
    k, g = await boot(tmp_path, ScalePolicy(min=1, max=3, cooldown_s=60, idle_s=60))
    events = await k.fleet.scale_to(g, 3, "by hand")
    assert [(e["action"], e["device"]) for e in events] == [("up", "g-2"), ("up", "g-1")]
    assert len(k.fleet.active(g)) == 3
    events = await k.fleet.scale_to(g, 1, "by hand")
    assert [(e["action"], e["device"]) for e in events[:2]] == [("down", "g-1"), ("down", "g-2")]
    assert [d.name for d in g.members] == ["g-0"] and events[0]["reason"] == "by hand"
    await k.stop()


@pytest.mark.parametrize("replicas", [0, 4, -1, "2", 2.0, True, None])
async def test_scale_to_refuses_bad_replica_counts(tmp_path: Path, replicas: Any) -> None:
    k, g = await boot(tmp_path, ScalePolicy(min=1, max=3))
    with pytest.raises(InvalidRequest) as err:
        await k.fleet.scale_to(g, replicas, "by hand")
    assert err.value.param == "replicas" and "between 1 and 3" in err.value.message
    assert k.fleet.events() == [] and len(g.members) == 1
    await k.stop()


async def test_an_unknown_group_and_a_busy_one_are_refused(tmp_path: Path) -> None:
    k, g = await boot(tmp_path, ScalePolicy(min=1, max=2))
    for name in ("nope", None, 3):
        with pytest.raises(NotFound) as err:
            k.fleet.group(name)
        assert err.value.param == "group" and "groups: g" in err.value.message
    gate = asyncio.Event()
    busy = asyncio.create_task(k.fleet.change(g, gate.wait))
    await asyncio.sleep(0)
    with pytest.raises(InvalidRequest) as err:
        await k.fleet.scale_to(g, 2, "by hand")
    assert err.value.param == "group" and "already changing" in err.value.message
    gate.set()
    await busy
    assert not k.fleet.busy(g)
    await k.stop()


def test_a_policy_needs_min_at_most_max(tmp_path: Path) -> None:
    ScalePolicy(min=0, max=1).check("cluster.g")
    for lo, hi in ((2, 1), (-1, 1), (0, 0)):
        with pytest.raises(InvalidRequest) as err:
            ScalePolicy(min=lo, max=hi).check("cluster.g")
        assert err.value.param == "cluster.g.replicas"


async def test_the_job_and_batch_runners_follow_the_slots_of_the_replicas(tmp_path: Path) -> None:
    k, g = await boot(tmp_path, ScalePolicy(min=1, max=2, idle_s=3600), slots=3)
    slots = 3
    assert (k.admission.slots, k.batches.slots) == (slots, slots)
    await k.fleet.scale_to(g, 2, "test")
    assert (k.admission.slots, k.batches.slots) == (2 * slots, 2 * slots)
    assert k.jobs.capacity == 2 * slots * JOBS_PER_SLOT
    await k.fleet.scale_to(g, 1, "test")
    assert k.jobs.capacity == slots * JOBS_PER_SLOT and k.batches.slots == slots
    await k.stop()
