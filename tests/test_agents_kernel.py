"""Agent machinery inside the kernel, on the mock device: suspending parks a
process's requests in the scheduler, captured logs rotate and are read by
position, a program left by a crashed kernel is killed at the next start, and bad
proc.exec / wait / logs / signal arguments are 4xx answers naming the field."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from llmos.devices import MockDevice
from llmos.errors import Killed, NotFound, Unauthorized
from llmos.kernel import Caller, Kernel, ProcState, ReqState
from llmos.kernel.agentlog import LogSink
from llmos.params import Settings
from tests.conftest import MockKernel

MSGS = [{"role": "user", "content": "hello"}]


async def make(home: Path, **dev: Any) -> tuple[Kernel, MockDevice, Caller]:
    device = MockDevice(**{"slots": 1, "token_delay": 0.005, **dev})
    kernel = Kernel(Settings(home=home, admin_token="adm"), [device])
    await kernel.start()
    return kernel, device, kernel.authenticate("adm")


async def process(kernel: Kernel, admin: Caller, name: str) -> Caller:
    spawned = await kernel.call("proc.spawn", admin, {"name": name})
    return kernel.authenticate(spawned["token"])


# -- suspend: the scheduler parks a process's requests ------------------------------------
async def test_suspend_parks_running_and_waiting_requests_until_resume(tmp_path: Path) -> None:
    kernel, device, admin = await make(tmp_path)
    agent, other = await process(kernel, admin, "agent"), await process(kernel, admin, "other")
    args = {"model": "mock", "messages": MSGS, "max_tokens": 60}
    running = await kernel.call("llm.chat", agent, args)
    queued = await kernel.call("llm.chat", agent, args)
    await asyncio.sleep(0.05)
    assert running.state == ReqState.RUNNING and running.output_tokens > 0

    await kernel.call("proc.signal", admin, {"pid": agent.pid, "signal": "suspend"})
    proc = kernel.procs.get(agent.pid)
    assert proc.state == ProcState.SUSPENDED
    rival = await kernel.call("llm.chat", other, args)  # gets the slot the agent leaves
    late = await kernel.call("llm.chat", agent, args)  # a new request of a suspended process
    await rival.outcome()
    parked = {running, queued, late}
    assert set(kernel.scheduler.parking.held()) == parked
    assert all(r.state in (ReqState.PREEMPTED, ReqState.WAITING) for r in parked)
    tokens = running.output_tokens
    assert 0 < tokens < 60 and queued.output_tokens == late.output_tokens == 0
    await asyncio.sleep(0.1)  # nothing of a suspended process runs, though the slot is free
    assert running.output_tokens == tokens and device.in_flight == 0
    assert proc.state == ProcState.SUSPENDED and proc.waiting == 3 and proc.running == 0
    assert kernel.scheduler.num_waiting() == 3

    await kernel.call("proc.signal", admin, {"pid": agent.pid, "signal": "resume"})
    assert proc.state in (ProcState.RUNNING, ProcState.WAITING)
    for req in (running, queued, late):
        assert (await req.outcome()).reason == "length" and req.output_tokens == 60
    assert running.dispatches == 2 and running.preemptions == 1
    assert proc.state == ProcState.READY and not kernel.scheduler.parking.held()
    assert proc.tokens_out == 180
    await kernel.stop()


async def test_killing_a_suspended_process_fails_its_parked_requests(tmp_path: Path) -> None:
    kernel, _device, admin = await make(tmp_path)
    agent = await process(kernel, admin, "agent")
    await kernel.call("proc.signal", admin, {"pid": agent.pid, "signal": "suspend"})
    req = await kernel.call("llm.chat", agent, {"model": "mock", "messages": MSGS})
    assert kernel.scheduler.parking.held() == [req]
    killed = await kernel.call("proc.signal", admin, {"pid": agent.pid, "signal": "kill"})
    assert killed["state"] == "killed"
    done = await req.outcome()
    assert isinstance(done.error, Killed) and req.started_at is None
    assert (
        not kernel.scheduler.parking.held() and agent.pid not in kernel.scheduler.parking.suspended
    )
    with pytest.raises(Killed):
        await kernel.call("proc.signal", admin, {"pid": agent.pid, "signal": "resume"})
    await kernel.stop()


async def test_signals_are_idempotent_and_a_process_may_suspend_only_itself(
    tmp_path: Path,
) -> None:
    kernel, _device, admin = await make(tmp_path)
    agent, other = await process(kernel, admin, "agent"), await process(kernel, admin, "other")
    for sig, state in (("suspend", "suspended"), ("suspend", "suspended"), ("resume", "ready")):
        got = await kernel.call("proc.signal", agent, {"pid": agent.pid, "signal": sig})
        assert got["state"] == state
    assert (await kernel.call("proc.signal", agent, {"pid": agent.pid, "signal": "resume"}))[
        "state"
    ] == "ready"
    with pytest.raises(NotFound):  # another process: not even visible to it
        await kernel.call("proc.signal", agent, {"pid": other.pid, "signal": "suspend"})
    # term on a process that runs no program is a kill
    got = await kernel.call("proc.signal", admin, {"pid": other.pid, "signal": "term"})
    assert got["state"] == "killed"
    await kernel.stop()


# -- captured output ------------------------------------------------------------------------
def test_logs_rotate_keep_two_parts_and_are_read_by_position(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "stdout.log", limit=100)
    for i in range(30):
        sink.write(f"line {i:02d}\n".encode())  # 8 bytes each: 240 in all
    assert sink.end == 240 and (tmp_path / "stdout.log.1").is_file()
    kept = (tmp_path / "stdout.log.1").read_bytes() + (tmp_path / "stdout.log").read_bytes()
    assert sink.start == 240 - len(kept) > 0 and len(kept) <= 200
    whole = sink.read(0, None, 1 << 20, growing=True)
    assert whole.dropped == sink.start and whole.offset == sink.start
    assert whole.text.endswith("line 29\n") and whole.next_offset == 240
    page = sink.read(232, None, 1 << 20, growing=True)
    assert page.text == "line 29\n" and page.dropped == 0
    assert sink.read(240, None, 10, growing=True).text == ""
    assert sink.read(None, 2, 1 << 20, growing=False).text == "line 28\nline 29\n"
    assert sink.read(None, 0, 1 << 20, growing=False).text == ""
    sink.close()
    again = LogSink(tmp_path / "stdout.log", limit=100)  # after a restart: from the files
    assert again.end == len(kept) and again.read(None, 1, 100, False).text == "line 29\n"


def test_logs_never_split_a_character_of_a_growing_stream(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "err.log", limit=1 << 20)
    sink.write("né".encode()[:-1])  # the é's second byte is not written yet
    first = sink.read(0, None, 100, growing=True)
    assert first.text == "n" and first.next_offset == 1
    sink.write("é".encode()[-1:] + b"!")
    assert sink.read(first.next_offset, None, 100, growing=True).text == "é!"
    sink.close()


# -- a kernel that crashed left a program running --------------------------------------------
async def test_a_program_left_by_a_crashed_kernel_is_killed_at_start(tmp_path: Path) -> None:
    script = tmp_path / "stray.py"
    script.write_text("import time\ntime.sleep(60)\n")
    stray = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        kernel, _device, admin = await make(tmp_path / "home")
        spawned = await kernel.call("proc.spawn", admin, {"name": "stray"})
        proc = kernel.procs.get(spawned["pid"])
        proc.os_pid, proc.command = stray.pid, str(script)
        proc.created_at = psutil.Process(stray.pid).create_time()
        kernel.store.save_process(proc)
        kernel.store.close()  # a crash: nothing stopped, nothing recorded

        again = Kernel(Settings(home=tmp_path / "home", admin_token="adm"), [MockDevice()])
        await again.start()
        assert stray.wait(timeout=10) == -9  # killed, not left running
        assert again.procs.get(proc.pid).state == ProcState.KILLED
        with pytest.raises(Unauthorized):  # its token was revoked
            again.authenticate(spawned["token"])
        await again.stop()
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


# -- bad input: 4xx naming the field ------------------------------------------------------
async def _error(resp: httpx.Response, status: int, param: str) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["param"] == param, err
    return str(err["message"])


async def test_exec_refuses_bad_programs_and_limits(mock: MockKernel, tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text("print('hi')\n")
    c = mock.client
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "path", "path"),
        ({"path": "relative/agent.py"}, "path", "absolute"),
        ({"path": str(tmp_path / "missing.py")}, "path", "no such file"),
        ({"path": str(tmp_path)}, "path", "not a regular file"),
        ({"path": str(ok), "cpu_s": -1}, "cpu_s", ""),
        ({"path": str(ok), "cpu_s": 0}, "cpu_s", ""),
        ({"path": str(ok), "mem_mb": 8}, "mem_mb", ""),
        ({"path": str(ok), "args": [1, 2]}, "args[0]", ""),
        ({"path": str(ok), "env": {"A": 1}}, "env.A", ""),
        ({"path": str(ok), "priority": 99}, "priority", ""),
        ({"path": str(ok), "token_budget": 0}, "token_budget", ""),
        ({"path": str(ok), "bogus": 1}, "bogus", ""),
    ]
    for body, param, words in cases:
        message = await _error(await c.post("/v1/processes/exec", json=body), 400, param)
        assert words in message, (body, message)
    # the same checks through the generic syscall route (the kernel's own validation)
    kernel_cases: list[tuple[dict[str, Any], str]] = [
        ({"path": str(ok), "args": ["a\x00b"]}, "args[0]"),
        ({"path": str(ok), "env": {"1BAD": "x"}}, "env"),
        ({"path": str(ok), "cpu_s": "fast"}, "cpu_s"),
    ]
    for body, param in kernel_cases:
        await _error(await c.post("/v1/syscalls/proc.exec", json=body), 400, param)
    lone_surrogate = b'{"path": "/tmp/\\udcff.py"}'  # valid JSON, not valid UTF-8 for the OS
    headers = {"content-type": "application/json"}
    sent = await c.post("/v1/syscalls/proc.exec", content=lone_surrogate, headers=headers)
    await _error(sent, 400, "path")
    assert mock.kernel.procs.list() == []  # bad input created nothing


async def test_wait_logs_and_signal_refuse_bad_targets(mock: MockKernel) -> None:
    c = mock.client
    await _error(await c.post("/v1/processes/999/wait", json={}), 404, "pid")
    await _error(await c.get("/v1/processes/999/logs"), 404, "pid")
    await _error(await c.post("/v1/processes/999/signal", json={"signal": "kill"}), 404, "pid")
    pid = (await c.post("/v1/processes", json={"name": "plain"})).json()["pid"]
    message = await _error(await c.post(f"/v1/processes/{pid}/wait", json={}), 400, "pid")
    assert "runs no program" in message
    await _error(await c.get(f"/v1/processes/{pid}/logs"), 400, "pid")
    await _error(await c.get(f"/v1/processes/{pid}/logs?stream=stdin"), 400, "stream")
    bad = {"signal": "hup"}
    await _error(await c.post(f"/v1/processes/{pid}/signal", json=bad), 400, "signal")
    await _error(
        await c.post(f"/v1/processes/{pid}/wait", json={"timeout_s": -1}), 400, "timeout_s"
    )
    await _error(
        await c.post(f"/v1/processes/{pid}/wait", json={"timeout_s": 1e9}), 400, "timeout_s"
    )
    both = {"pid": pid, "offset": 0, "tail": 3}
    await _error(await c.post("/v1/syscalls/proc.logs", json=both), 400, "tail")


async def test_who_may_run_programs(mock: MockKernel, tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text("print('hi')\n")
    c = mock.client
    users = {}
    for name, role in (("ann", "user"), ("vic", "viewer")):
        made = await c.post("/v1/users", json={"name": name, "role": role})
        users[name] = {"Authorization": f"Bearer {made.json()['token']}"}
    body = {"path": str(ok)}
    denied = await c.post("/v1/processes/exec", json=body, headers=users["ann"])
    assert "--user-agents" in await _error(denied, 403, "authorization")
    await _error(
        await c.post("/v1/processes/exec", json=body, headers=users["vic"]), 403, "authorization"
    )
    spawned = (await c.post("/v1/processes", json={"name": "p"}, headers=users["ann"])).json()
    as_proc = {"Authorization": f"Bearer {spawned['token']}"}
    await _error(
        await c.post("/v1/processes/exec", json=body, headers=as_proc), 403, "authorization"
    )

    mock.kernel.settings.user_agents = True  # `llmos up --user-agents`
    ran = await c.post("/v1/processes/exec", json=body, headers=users["ann"])
    assert ran.status_code == 201, ran.text
    pid = ran.json()["pid"]
    assert ran.json()["owner"] == "ann" and ran.json()["os_pid"] > 0
    done = await c.post(f"/v1/processes/{pid}/wait", json={"timeout_s": 30}, headers=users["ann"])
    assert done.json()["exit_code"] == 0 and done.json()["state"] == "exited"
    logs = await c.get(f"/v1/processes/{pid}/logs", headers=users["ann"])
    assert logs.json()["text"] == "hi\n"
    denied = await c.get(f"/v1/processes/{pid}/logs", headers=users["vic"])
    await _error(denied, 403, "pid")  # a viewer sees the process, not its output
    assert (await c.get(f"/v1/processes/{pid}", headers=users["vic"])).status_code == 200


async def test_too_many_agents_is_429(
    mock: MockKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmos.kernel.agents as agents

    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(30)\n")
    monkeypatch.setattr(agents, "MAX_AGENTS", 1)
    first = await mock.client.post("/v1/processes/exec", json={"path": str(sleeper)})
    assert first.status_code == 201
    second = await mock.client.post("/v1/processes/exec", json={"path": str(sleeper)})
    assert second.status_code == 429 and "Retry-After" in second.headers
    assert len(mock.kernel.procs.list()) == 1  # refused before a process was made
    pid, os_pid = first.json()["pid"], first.json()["os_pid"]
    await mock.client.delete(f"/v1/processes/{pid}")
    await _wait_gone(os_pid)


async def _wait_gone(os_pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(os_pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"os process {os_pid} is still there")
