"""Invariants every policy keeps, checked by hypothesis on the mock device:
no request is lost, a device never exceeds its slots, every request ends (finished,
failed or cancelled), outputs are unchanged by context switches, the books balance,
and with aging on, a request's wait is bounded even under a flood."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmos.devices import MockDevice
from llmos.errors import Overloaded
from llmos.kernel import Done, Kernel, ReqState, Request
from llmos.params import POLICY_NAMES, Settings

job = st.tuples(
    st.integers(0, 3),  # owner
    st.integers(0, 39),  # priority
    st.integers(1, 24),  # max_tokens
    st.integers(0, 5),  # arrival delay, in ms
    st.booleans(),  # killed later?
)


async def _drain(req: Request, seen: dict[str, int]) -> None:
    while True:
        event = await req.events.get()
        if isinstance(event, Done):
            seen[req.id] = seen.get(req.id, 0) + 1
            return


def _reference(prompt_ids: list[int], n: int) -> str:
    ctx, out = list(prompt_ids), []
    for _ in range(n):
        tid = MockDevice.next_id(ctx)
        ctx.append(tid)
        out.append(chr(tid))
    return "".join(out)


async def _run(policy: str, slots: int, quantum: int, jobs: list[Any], home: Path) -> None:
    device = MockDevice(slots=slots, token_delay=0.0005)
    kernel = Kernel(
        Settings(home=home, admin_token="adm", policy=policy, quantum=quantum, max_queue=64),
        [device],
    )
    await kernel.start()
    admin = kernel.authenticate("adm")
    procs = {}
    for owner in range(4):
        token, _ = kernel.tokens.issue(f"owner{owner}", "user")
        procs[owner] = kernel.authenticate(token)
    seen: dict[str, int] = {}
    reqs: list[tuple[Request, bool]] = []
    drains = []
    for i, (owner, prio, n, delay, kill) in enumerate(jobs):
        await asyncio.sleep(delay / 1000)
        spawned = await kernel.call("proc.spawn", procs[owner], {"name": f"j{i}", "priority": prio})
        who = kernel.authenticate(spawned["token"])
        args = {"model": "mock", "messages": [{"role": "user", "content": f"job {i}"}]}
        try:
            req = await kernel.call("llm.chat", who, {**args, "max_tokens": n})
        except Overloaded:
            continue
        reqs.append((req, kill))
        drains.append(asyncio.create_task(_drain(req, seen)))
    for req, kill in reqs:
        if kill:
            await kernel.call("proc.kill", admin, {"pid": req.pid})
    await asyncio.wait_for(asyncio.gather(*drains), timeout=30)  # every request ends

    assert device.max_in_flight <= slots
    assert max(kernel.scheduler.peak_running.values()) <= slots
    assert all(seen[r.id] == 1 for r, _ in reqs)  # each ended exactly once: none lost
    for req, kill in reqs:
        assert req.state.finished
        if req.state == ReqState.FINISHED_LENGTH:  # output unchanged by any switch
            assert req.text == _reference(req.snapshot.prompt_ids, req.snapshot.params.max_tokens)
        else:
            assert kill and req.state == ReqState.FINISHED_ABORTED
    await asyncio.sleep(0)  # let done-callbacks settle
    assert kernel.scheduler.num_running() == 0 and kernel.scheduler.num_waiting() == 0
    assert kernel.admission.waiting == 0
    assert all(p.running == 0 and p.waiting == 0 for p in kernel.procs.list())
    await kernel.stop()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    policy=st.sampled_from(POLICY_NAMES),
    slots=st.integers(1, 3),
    quantum=st.integers(1, 6),
    jobs=st.lists(job, min_size=1, max_size=14),
)
def test_invariants_hold_for_every_policy(
    policy: str, slots: int, quantum: int, jobs: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(_run(policy, slots, quantum, jobs, Path(home)))


async def _starved(policy: str, home: Path) -> tuple[int, int]:
    """One low-priority long job in a flood of high-priority short ones from other
    owners: how many of the flood finished before it?"""
    device = MockDevice(slots=1, token_delay=0.0005)
    kernel = Kernel(
        Settings(home=home, admin_token="adm", policy=policy, quantum=4, max_queue=512),
        [device],
    )
    await kernel.start()
    kernel.sched_config.aging_s = 0.002  # a level per 2 ms waited: 39 levels in ~80 ms
    kernel.sched_config.sjf_aging_tokens_per_s = 2000.0
    kernel.sched_config.mlfq_boost_s = 0.05
    kernel.scheduler.set_policy(policy, kernel.sched_config)
    admin = kernel.authenticate("adm")
    low = await kernel.call("proc.spawn", admin, {"name": "low", "priority": 0})
    high = await kernel.call("proc.spawn", admin, {"name": "high", "priority": 39})
    hi = kernel.authenticate(high["token"])
    flood: list[Request] = []
    args = {"model": "mock", "messages": [{"role": "user", "content": "x"}]}
    for _ in range(5):
        flood.append(await kernel.call("llm.chat", hi, {**args, "max_tokens": 3}))
    victim = await kernel.call(
        "llm.chat", kernel.authenticate(low["token"]), {**args, "max_tokens": 12}
    )
    for _ in range(150):  # keep the flood coming while the victim waits
        flood.append(await kernel.call("llm.chat", hi, {**args, "max_tokens": 3}))
        await asyncio.sleep(0.002)
        if victim.state.finished:
            break
    seen: dict[str, int] = {}
    await asyncio.wait_for(asyncio.gather(*(_drain(r, seen) for r in [*flood, victim])), 30)
    before = sum(1 for r in flood if (r.finished_at or 0) < (victim.finished_at or 0))
    await kernel.stop()
    return before, len(flood)


def test_aging_bounds_the_wait_under_a_flood() -> None:
    for policy in ("priority", "sjf", "mlfq"):
        with tempfile.TemporaryDirectory() as home:
            before, total = asyncio.run(_starved(policy, Path(home)))
        assert before < total, f"{policy}: the low-priority job waited for the whole flood"
