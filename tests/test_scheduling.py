"""Context switching and the six policies, on the mock device (deterministic output:
a function of the full context, like greedy decoding)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import MockDevice
from llmos.errors import InvalidRequest, Overloaded, QuotaExceeded
from llmos.kernel import Caller, Done, Kernel, ReqState, Request
from llmos.params import Settings

MSG = [{"role": "user", "content": "hello"}]


async def boot(home: Path, policy: str = "fifo", slots: int = 1, **settings: Any) -> Kernel:
    device = MockDevice(slots=slots, token_delay=0.002)
    kernel = Kernel(Settings(home=home, admin_token="adm", policy=policy, **settings), [device])
    await kernel.start()
    return kernel


async def done(req: Request) -> Done:
    while True:
        event = await req.events.get()
        if isinstance(event, Done):
            return event


async def chat(k: Kernel, who: Caller, text: str = "hello", n: int = 12, **kw: Any) -> Request:
    args = {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": n}
    req: Request = await k.call("llm.chat", who, {**args, **kw})
    return req


async def reference(tmp_path: Path, texts: list[str], n: int) -> list[str]:
    """Outputs without any context switch (fifo, one slot)."""
    k = await boot(tmp_path / "ref")
    admin = k.authenticate("adm")
    reqs = [await chat(k, admin, t, n) for t in texts]
    await asyncio.gather(*(done(r) for r in reqs))
    await k.stop()
    return [r.text for r in reqs]


async def test_round_robin_interleaves_and_output_is_unchanged(tmp_path: Path) -> None:
    texts = ["alpha", "beta", "gamma"]
    expected = await reference(tmp_path, texts, 20)
    k = await boot(tmp_path, "rr", quantum=3)
    admin = k.authenticate("adm")
    reqs = [await chat(k, admin, t, 20) for t in texts]
    await asyncio.gather(*(done(r) for r in reqs))
    assert [r.text for r in reqs] == expected
    assert all(r.state == ReqState.FINISHED_LENGTH for r in reqs)
    assert all(r.preemptions >= 2 for r in reqs)  # each yielded while others waited
    assert reqs[0].finished_at > reqs[1].started_at  # type: ignore[operator]
    info = k.sched_info()
    assert info["preemptions"] == sum(r.preemptions for r in reqs)
    assert info["resume_cache_hit"] is not None and info["resume_cache_hit"] > 0.9
    proc = k.procs.get(reqs[0].pid)
    assert proc.preemptions == info["preemptions"] and proc.running == proc.waiting == 0
    rows = k.store.telemetry(limit=3)
    assert sum(r["preemptions"] for r in rows) == info["preemptions"]
    await k.stop()


async def test_alone_a_quantum_expiry_is_not_a_preemption(tmp_path: Path) -> None:
    k = await boot(tmp_path, "rr", quantum=2)
    req = await chat(k, k.authenticate("adm"), n=9)
    await done(req)
    assert req.preemptions == 0 and req.dispatches == 5 and len(req.text) == 9
    await k.stop()


async def test_stop_string_spanning_a_context_switch(tmp_path: Path) -> None:
    [free] = await reference(tmp_path, ["hello"], 20)
    stop = free[2:5]  # straddles the quantum boundary after token 3
    k = await boot(tmp_path, "rr", quantum=3)
    admin = k.authenticate("adm")
    a = await chat(k, admin, "hello", 20, stop=[stop])
    b = await chat(k, admin, "other", 20)
    await asyncio.gather(done(a), done(b))
    assert a.text == free[: free.index(stop)] and a.state == ReqState.FINISHED_STOPPED
    await k.stop()


async def test_priority_preempts_and_ages(tmp_path: Path) -> None:
    k = await boot(tmp_path, "priority")
    admin = k.authenticate("adm")
    low = await k.call("proc.spawn", admin, {"name": "low", "priority": 1})
    high = await k.call("proc.spawn", admin, {"name": "high", "priority": 30})
    slow = await chat(k, k.authenticate(low["token"]), "slow", 200)
    await asyncio.sleep(0.05)
    fast = await chat(k, k.authenticate(high["token"]), "fast", 10)
    await done(fast)
    assert not slow.state.finished and slow.preemptions == 1  # it made way
    await done(slow)
    assert len(slow.text) == 200
    assert slow.text == (await reference(tmp_path, ["slow"], 200))[0]
    await k.stop()


async def test_mlfq_demotes_long_jobs_and_short_ones_overtake(tmp_path: Path) -> None:
    k = await boot(tmp_path, "mlfq", quantum=4)
    admin = k.authenticate("adm")
    long = await chat(k, admin, "long", 300)
    await asyncio.sleep(0.1)  # long has used several quanta: demoted
    assert long.level >= 1
    short = await chat(k, admin, "short", 3)
    await done(short)
    assert not long.state.finished
    await done(long)
    await k.stop()


async def test_fair_share_between_backlogged_owners(tmp_path: Path) -> None:
    k = await boot(tmp_path, "fair", slots=1)
    alice = k.authenticate(k.tokens.issue("alice", "user")[0])
    bob = k.authenticate(k.tokens.issue("bob", "user")[0])
    reqs = [await chat(k, alice, f"a{i}", 10) for i in range(10)]
    reqs += [await chat(k, bob, f"b{i}", 5) for i in range(10)]
    first_half = []
    for _ in range(10):  # the first ten to finish
        finished = await next_finished(reqs, first_half)
        first_half.append(finished)

    # VTC's service: 1 per input token, 2 per output token
    def cost(r: Request) -> int:
        return r.prompt_tokens + 2 * r.output_tokens

    served = {o: sum(cost(r) for r in first_half if r.owner == o) for o in ("alice", "bob")}
    assert abs(served["alice"] - served["bob"]) <= 2 * max(cost(r) for r in first_half)
    assert {r.owner for r in first_half} == {"alice", "bob"}  # both got served early
    await asyncio.gather(*(done(r) for r in reqs))
    await k.stop()


async def next_finished(reqs: list[Request], seen: list[Request]) -> Request:
    while True:
        for r in reqs:
            if r.state.finished and r not in seen:
                return r
        await asyncio.sleep(0.002)


async def test_sjf_runs_short_predicted_jobs_first(tmp_path: Path) -> None:
    k = await boot(tmp_path, "sjf")
    admin = k.authenticate("adm")
    first = await chat(k, admin, "first", 30)  # takes the only slot
    long = await chat(k, admin, "long", 200)
    short = await chat(k, admin, "short", 5)  # sjf without history: max_tokens predicts
    await done(short)
    assert not long.state.finished
    await asyncio.gather(done(first), done(long))
    await k.stop()


async def test_switch_policy_at_run_time_keeps_the_queue(tmp_path: Path) -> None:
    k = await boot(tmp_path, "fifo")
    admin = k.authenticate("adm")
    reqs = [await chat(k, admin, f"q{i}", 8) for i in range(6)]
    info = await k.call("sched.set", admin, {"policy": "rr", "quantum": 2})
    assert info["policy"] == "rr" and info["quantum"] == 2
    await asyncio.gather(*(done(r) for r in reqs))
    assert all(len(r.text) == 8 for r in reqs)
    with pytest.raises(InvalidRequest):
        await k.call("sched.set", admin, {"policy": "lottery"})
    with pytest.raises(InvalidRequest):
        await k.call("sched.set", admin, {"quantum": 0})
    await k.stop()


async def test_bounded_queues_answer_429_with_retry_after(tmp_path: Path) -> None:
    k = await boot(tmp_path, max_queue=3, max_queue_per_owner=2)
    admin = k.authenticate("adm")
    alice = k.authenticate(k.tokens.issue("alice", "user")[0])
    running = await chat(k, admin, n=100)
    queued = [await chat(k, admin, n=5) for _ in range(2)]
    with pytest.raises(Overloaded) as per_owner:
        await chat(k, admin, n=5)
    assert per_owner.value.param == "max_queue_per_owner" and per_owner.value.retry_after >= 1
    queued.append(await chat(k, alice, n=5))
    with pytest.raises(Overloaded) as full:
        await chat(k, alice, n=5)
    assert full.value.param == "max_queue" and full.value.status == 429
    await asyncio.gather(*(done(r) for r in [running, *queued]))
    await chat(k, admin, n=1)  # room again
    await k.stop()


async def test_process_quotas(tmp_path: Path) -> None:
    k = await boot(tmp_path, slots=2)
    admin = k.authenticate("adm")
    p = await k.call("proc.spawn", admin, {"name": "q", "max_concurrent": 1, "token_budget": 100})
    agent = k.authenticate(p["token"])
    first = await chat(k, agent, n=30)
    with pytest.raises(Overloaded) as busy:
        await chat(k, agent, n=5)
    assert busy.value.param == "max_concurrent" and busy.value.code == "quota_exceeded"
    await done(first)
    second = await chat(k, agent, n=30)
    await done(second)
    with pytest.raises(QuotaExceeded) as spent:
        await chat(k, agent, n=5)
    assert spent.value.param == "token_budget" and spent.value.status == 403
    with pytest.raises(InvalidRequest):
        await k.call("proc.spawn", admin, {"name": "bad", "max_concurrent": 0})
    await k.stop()


async def test_kill_a_preempted_request(tmp_path: Path) -> None:
    k = await boot(tmp_path, "rr", quantum=2)
    admin = k.authenticate("adm")
    p = await k.call("proc.spawn", admin, {"name": "victim"})
    a = await chat(k, k.authenticate(p["token"]), "a", 100)
    b = await chat(k, admin, "b", 100)
    while a.state != ReqState.PREEMPTED:
        await asyncio.sleep(0.001)
    await k.call("proc.kill", admin, {"pid": p["pid"]})
    end = await done(a)
    assert end.error is not None and a.state == ReqState.FINISHED_ABORTED
    await done(b)
    proc = k.procs.get(p["pid"])
    assert proc.waiting == proc.running == 0 and k.admission.waiting == 0
    await k.stop()
