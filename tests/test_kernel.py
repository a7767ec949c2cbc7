"""Kernel unit tests on the mock device: run queue, slots, kill, accounting, store."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from llmos.devices import MockDevice
from llmos.errors import Forbidden, InvalidRequest, Killed, NotFound, Unauthorized
from llmos.kernel import Caller, Kernel, ProcState, ReqState
from llmos.kernel.process import Process
from llmos.kernel.stops import StopMatcher
from llmos.params import Settings

MSGS = [{"role": "user", "content": "hello"}]


async def make(home: Path, **dev: Any) -> tuple[Kernel, MockDevice, Caller]:
    device = MockDevice(**{"slots": 2, "token_delay": 0.001, **dev})
    kernel = Kernel(Settings(home=home, admin_token="adm"), [device])
    await kernel.start()
    return kernel, device, kernel.authenticate("adm")


async def test_fifo_order_and_slot_limit(tmp_path: Path) -> None:
    kernel, device, admin = await make(tmp_path, slots=2)
    reqs = [
        await kernel.call("llm.chat", admin, {"model": "mock", "messages": MSGS, "max_tokens": 5})
        for _ in range(7)
    ]
    assert kernel.scheduler.num_running() == 2 and kernel.scheduler.num_waiting() == 5
    await asyncio.gather(*(r.outcome() for r in reqs))
    starts = sorted(reqs, key=lambda r: r.started_at or 0)
    assert starts == reqs  # first come, first served
    assert device.max_in_flight == 2 and kernel.scheduler.peak_running["mock0"] == 2
    assert all(r.state == ReqState.FINISHED_LENGTH and r.output_tokens == 5 for r in reqs)
    await kernel.stop()


async def test_kill_fails_waiting_and_stops_running(tmp_path: Path) -> None:
    kernel, device, admin = await make(tmp_path, slots=1, token_delay=0.01)
    spawned = await kernel.call("proc.spawn", admin, {"name": "agent", "priority": 5})
    agent = kernel.authenticate(spawned["token"])
    assert agent.pid == spawned["pid"] and agent.role == "process"
    args = {"model": "mock", "messages": MSGS, "max_tokens": 500}
    running = await kernel.call("llm.chat", agent, args)
    waiting = await kernel.call("llm.chat", agent, args)
    await asyncio.sleep(0.05)
    assert kernel.procs.get(agent.pid).state == ProcState.RUNNING
    await kernel.call("proc.kill", admin, {"pid": agent.pid})
    done_w, done_r = await waiting.outcome(), await running.outcome()
    assert isinstance(done_w.error, Killed) and isinstance(done_r.error, Killed)
    assert waiting.started_at is None and 0 < running.output_tokens < 500
    await asyncio.sleep(0.01)
    assert device.in_flight == 0 and kernel.scheduler.num_running() == 0
    proc = kernel.procs.get(agent.pid)
    assert proc.state == ProcState.KILLED and proc.running == proc.waiting == 0
    assert proc.tokens_out == running.output_tokens and proc.requests == 2
    with pytest.raises(Killed):
        await kernel.call("llm.chat", agent, args)
    rows = kernel.store.telemetry()
    assert {r["finish_reason"] for r in rows} == {"abort"} and len(rows) == 2
    await kernel.stop()


async def test_stop_strings_end_generation_and_hold_back_partials(tmp_path: Path) -> None:
    kernel, _device, admin = await make(tmp_path)
    args = {"model": "mock", "messages": MSGS, "max_tokens": 30, "temperature": 0}
    free = await kernel.call("llm.chat", admin, args)
    await free.outcome()
    stop = free.text[5:8]
    cut = await kernel.call("llm.chat", admin, {**args, "stop": [stop]})
    await cut.outcome()
    assert cut.state == ReqState.FINISHED_STOPPED and cut.text == free.text[: free.text.index(stop)]
    await kernel.stop()


def test_stop_matcher_pieces() -> None:
    m = StopMatcher(("END", "xyz"))
    assert m.feed("hello E") == ("hello ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("o") == ("ENo", False)
    assert m.feed(" x") == (" ", False)
    assert m.feed("yz tail") == ("", True)
    assert StopMatcher(()).feed("abc") == ("abc", False)
    m2 = StopMatcher(("ab",))
    assert m2.feed("a") == ("", False)
    assert m2.flush() == "a"


async def test_implicit_process_per_token_and_accounting(tmp_path: Path) -> None:
    kernel, _device, admin = await make(tmp_path)
    args = {"model": "mock", "messages": MSGS, "max_tokens": 3}
    r1 = await kernel.call("llm.chat", admin, args)
    r2 = await kernel.call("llm.chat", admin, args)
    await asyncio.gather(r1.outcome(), r2.outcome())
    await asyncio.sleep(0)
    assert r1.pid == r2.pid
    proc = kernel.procs.get(r1.pid)
    assert proc.implicit and proc.requests == 2 and proc.tokens_out == 6
    assert proc.tokens_in == r1.prompt_tokens + r2.prompt_tokens
    user_token, _ = kernel.tokens.issue("alice", "user")
    alice = kernel.authenticate(user_token)
    r3 = await kernel.call("llm.chat", alice, args)
    await r3.outcome()
    assert r3.pid != r1.pid and kernel.procs.get(r3.pid).owner == "alice"
    # alice sees only her own processes; admin sees all
    assert [p["pid"] for p in await kernel.call("proc.list", alice)] == [r3.pid]
    assert len(await kernel.call("proc.list", admin)) == 2
    with pytest.raises(NotFound):
        await kernel.call("proc.kill", alice, {"pid": r1.pid})
    row = kernel.store.telemetry(limit=1)[0]
    assert row["owner"] == "alice" and row["output_tokens"] == 3 and row["total_s"] > 0
    assert row["queue_wait_s"] is not None and row["ttft_s"] is not None
    await kernel.stop()


async def test_syscall_table_rejects_unknown_and_forbidden(tmp_path: Path) -> None:
    kernel, _device, admin = await make(tmp_path)
    with pytest.raises(NotFound):
        await kernel.call("proc.teleport", admin)
    narrow = {"syscalls": ["llm.*", "proc.spawn"]}
    spawned = await kernel.call("proc.spawn", admin, {"name": "p", "capabilities": narrow})
    proc_caller = kernel.authenticate(spawned["token"])
    with pytest.raises(Forbidden):  # not in its capability
        await kernel.call("proc.list", proc_caller)
    with pytest.raises(Forbidden):  # a child may not widen its parent's rights
        await kernel.call(
            "proc.spawn", proc_caller, {"name": "child", "capabilities": {"syscalls": ["fs.*"]}}
        )
    child = await kernel.call("proc.spawn", proc_caller, {"name": "child"})
    assert child["capabilities"]["syscalls"] == sorted(
        ["llm.chat", "llm.chat_tools", "llm.complete", "proc.spawn"]
    )
    with pytest.raises(InvalidRequest):
        await kernel.call("proc.get", admin, {"pid": "one"})
    with pytest.raises(Unauthorized):
        kernel.authenticate("llmos-deadbeef-nope")
    info = await kernel.call("sys.info", admin)
    assert info["models"] == ["mock"] and info["slots"] == 2
    await kernel.stop()


def test_process_state_transitions_are_checked() -> None:
    p = Process(pid=1, name="p", owner="o", priority=1)
    p.move(ProcState.RUNNING)
    p.move(ProcState.KILLED)
    assert not p.state.alive and p.finished_at is not None
    with pytest.raises(InvalidRequest):
        p.move(ProcState.READY)
    assert ReqState.FINISHED_STOPPED.finished and not ReqState.PREEMPTED.finished


async def test_generated_admin_token_is_private_and_state_survives_restart(
    tmp_path: Path,
) -> None:
    device = MockDevice()
    kernel = Kernel(Settings(home=tmp_path, admin_token=None), [device])
    await kernel.start()
    token = kernel.admin_token
    assert token is not None
    path = tmp_path / "admin-token"
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in (tmp_path / "llmos.db").read_bytes().decode("latin-1")  # only hashed
    admin = kernel.authenticate(token)
    spawned = await kernel.call("proc.spawn", admin, {"name": "keeper"})
    killed = await kernel.call("proc.spawn", admin, {"name": "gone"})
    await kernel.call("proc.kill", admin, {"pid": killed["pid"]})
    await kernel.stop()

    again = Kernel(Settings(home=tmp_path, admin_token=None), [MockDevice()])
    await again.start()
    assert again.admin_token is None  # not regenerated
    again.authenticate(token)
    keeper = again.authenticate(spawned["token"])
    assert again.procs.get(keeper.pid or 0).state == ProcState.READY
    assert again.procs.get(killed["pid"]).state == ProcState.KILLED
    fresh = await again.call("proc.spawn", again.authenticate(token), {"name": "new"})
    assert fresh["pid"] > killed["pid"]
    await again.stop()
