"""Device faults in the kernel, on the mock device with injected failures: requeue and
resume on another device (or the same one once it returns), the circuit breaker,
health checks, bounded retries and waits, and the scheduler's invariants under faults.
What clients see: tests/test_device_faults_api.py; real servers killed mid-generation:
tests/test_device_faults_real.py."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmos.errors import ContextOverflow, DeviceError, InvalidRequest, Unavailable
from llmos.kernel import ReqState, Request
from llmos.kernel.breaker import Breaker, FaultConfig
from llmos.params import POLICY_NAMES, Settings
from llmos.types import SamplingParams, Snapshot, Token
from tests._faults import (
    ADMIN,
    CLOSED,
    HALF_OPEN,
    OPEN,
    TextOnly,
    Watched,
    ask,
    assert_books_balance,
    boot,
    done,
    reference,
    until,
)


# -- the breaker alone, on a fake clock ---------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_state_machine() -> None:
    clock = Clock()
    b = Breaker("d", FaultConfig(threshold=3, cooldown_s=5.0), clock)
    assert b.allows and b.down_since is None
    b.failure("boom")  # one failure: stop dispatching until a probe answers
    assert b.state == HALF_OPEN and b.down_since == 100.0 and b.probe_due()
    b.probed(True)
    assert b.state == CLOSED and b.failures == 1 and b.down_since is None
    b.failure("boom")
    b.probed(True)
    b.failure("boom")  # the third in a row
    assert b.state == OPEN and b.trips == 1 and b.faults == 3 and b.last_error == "boom"
    clock.now += 4.9
    assert not b.probe_due()  # cooling down: no probe, no dispatch
    clock.now += 0.1
    assert b.probe_due()
    b.probed(False, "health check failed: refused")  # still down: another cooldown
    assert b.state == OPEN and not b.probe_due() and b.last_error.endswith("refused")
    clock.now += 5.0
    b.probed(True)  # half-open, then closed, one failure away from open again
    assert b.state == CLOSED and b.failures == 2
    b.failure("again")
    assert b.state == OPEN and b.trips == 2
    clock.now += 5.0
    b.probed(True)
    b.success()  # a completed generation forgets the failures
    assert b.failures == 0
    b.failure("once")
    assert b.state == HALF_OPEN


def test_a_failed_health_check_opens_a_closed_breaker() -> None:
    b = Breaker("d", FaultConfig(threshold=3), Clock())
    b.probed(False, "health check timed out after 5s")
    assert b.state == OPEN and b.failures == 0 and b.info()["breaker"] == "open"
    assert b.info()["last_error"] == "health check timed out after 5s"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("breaker_threshold", 0),
        ("breaker_cooldown_s", 0.0),
        ("device_retries", -1),
        ("device_wait_s", 0),
        ("health_interval_s", -1.0),
        ("health_timeout_s", 1e9),
    ],
)
def test_fault_settings_are_validated(tmp_path: Path, field: str, value: float) -> None:
    with pytest.raises(InvalidRequest) as err:
        FaultConfig.from_settings(Settings(home=tmp_path, **{field: value}))
    assert err.value.param == field and field in err.value.message


# -- requeue and resume ------------------------------------------------------------------
async def test_a_failed_generation_resumes_on_another_device(tmp_path: Path) -> None:
    d0, d1 = Watched("mock0"), Watched("mock1")
    d0.fail(after=5)
    kernel, admin = await boot(tmp_path, [d0, d1])
    req = await ask(kernel, admin, n=24)
    end = await done(req)
    assert end.error is None and req.state == ReqState.FINISHED_LENGTH
    assert req.text == reference(req)  # the same as a run without the fault
    assert (req.faults, req.dispatches, req.device, req.preemptions) == (1, 2, "mock1", 0)
    # resumed from its snapshot (prompt + the 5 tokens made on mock0), not restarted
    assert d1.started_prompts == [req.snapshot.prompt_ids + req.snapshot.generated_ids[:5]]
    b0 = kernel.scheduler.breakers["mock0"]
    assert b0.faults == 1 and "injected fault" in (b0.last_error or "")
    await until(lambda: b0.state == CLOSED)  # the health probe answered
    assert all(s == CLOSED for s in d0.states + d1.states)
    assert_books_balance(kernel)
    await kernel.stop()


async def test_a_request_waits_for_its_only_device_to_return(tmp_path: Path) -> None:
    d0 = Watched("mock0", token_delay=0.003)
    kernel, admin = await boot(tmp_path, [d0])
    req = await ask(kernel, admin, n=40)
    await until(lambda: len(req.snapshot.generated_ids) >= 6)
    d0.kill()  # dies mid-generation; probes fail; the request waits on the queue
    b0 = kernel.scheduler.breakers["mock0"]
    await until(lambda: b0.state == OPEN)
    await asyncio.sleep(0.1)  # several cooldowns and failed probes
    assert req.state == ReqState.PREEMPTED and b0.state == OPEN
    d0.revive()
    end = await done(req)
    assert end.error is None and req.text == reference(req)
    assert req.faults == 1 and req.dispatches == 2
    assert all(s == CLOSED for s in d0.states)  # nothing was sent while it was down
    assert_books_balance(kernel)
    await kernel.stop()


async def test_no_dispatch_to_an_open_device(tmp_path: Path) -> None:
    """Generations fail on mock0 though its health checks pass: after two failures in
    a row its circuit opens and every request runs on mock1."""
    d0, d1 = Watched("mock0"), Watched("mock1", token_delay=0.002)
    d0.fail(times=100)
    kernel, admin = await boot(tmp_path, [d0, d1], breaker_threshold=2, breaker_cooldown_s=60)
    first = await ask(kernel, admin, n=12, text="first")  # -> mock0, fails
    busy = await ask(kernel, admin, n=60, text="busy")  # keeps mock1 busy meanwhile
    b0 = kernel.scheduler.breakers["mock0"]
    await until(lambda: b0.state == OPEN)
    assert b0.faults == 2 and b0.trips == 1 and len(d0.started_prompts) == 2
    rest = [await ask(kernel, admin, n=8, text=f"job {i}") for i in range(4)]
    for req in (first, busy, *rest):
        assert (await done(req)).error is None
        assert req.text == reference(req) and req.device == "mock1"
    assert first.faults == 2
    assert len(d0.started_prompts) == 2 and b0.state == OPEN
    assert all(s == CLOSED for s in d0.states + d1.states)
    infos = {d["name"]: d for d in await kernel.call("sys.devices", kernel.authenticate(ADMIN))}
    assert infos["mock0"]["breaker"] == "open" and infos["mock0"]["faults"] == 2
    assert infos["mock1"]["breaker"] == "closed" and infos["mock1"]["faults"] == 0
    assert_books_balance(kernel)
    await kernel.stop()


async def test_an_unhealthy_device_is_skipped_until_its_health_returns(tmp_path: Path) -> None:
    d0, d1 = Watched("mock0"), Watched("mock1", slots=2)
    d0.healthy = False
    kernel, admin = await boot(tmp_path, [d0, d1], breaker_cooldown_s=0.05)
    b0 = kernel.scheduler.breakers["mock0"]
    await until(lambda: b0.state == OPEN)
    assert b0.faults == 0 and b0.healthy is False
    reqs = [await ask(kernel, admin, n=8, text=f"a{i}") for i in range(3)]
    for req in reqs:
        assert (await done(req)).error is None and req.device == "mock1"
    assert d0.started_prompts == []
    d0.healthy = True  # the next half-open probe closes the circuit
    await until(lambda: b0.state == CLOSED)
    assert b0.healthy is True
    reqs = [await ask(kernel, admin, n=30, text=f"b{i}") for i in range(3)]
    for req in reqs:
        assert (await done(req)).error is None and req.text == reference(req)
    assert {r.device for r in reqs} == {"mock0", "mock1"}  # 3 requests, 1 + 2 slots
    await kernel.stop()


# -- giving up, clearly -------------------------------------------------------------------
async def test_retries_are_bounded(tmp_path: Path) -> None:
    d0 = Watched("mock0")
    d0.fail(times=10, after=2)
    kernel, admin = await boot(tmp_path, [d0], device_retries=2, breaker_threshold=10)
    req = await ask(kernel, admin, n=12)
    end = await done(req)
    assert isinstance(end.error, DeviceError) and end.error.status == 502
    assert req.state == ReqState.FINISHED_ERROR and req.faults == 3
    assert "mock0" in end.error.message and "failed 3 times" in end.error.message
    assert len(d0.started_prompts) == 3
    assert req.text == reference(req)[:6]  # 2 tokens per attempt, resumed each time
    assert_books_balance(kernel)
    await kernel.stop()


async def test_the_wait_for_a_dead_device_is_bounded(tmp_path: Path) -> None:
    d0 = Watched("mock0", token_delay=0.003)
    kernel, admin = await boot(tmp_path, [d0], device_wait_s=0.2)
    running = await ask(kernel, admin, n=200)
    await until(lambda: len(running.snapshot.generated_ids) >= 3)
    d0.kill()
    queued = await ask(kernel, admin, n=5, text="queued")  # arrives while it is down
    for req in (running, queued):
        end = await done(req)
        assert isinstance(end.error, Unavailable) and end.error.status == 503
        assert "mock0 is open" in end.error.message and "'mock'" in end.error.message
        assert req.state == ReqState.FINISHED_ERROR
    assert running.faults == 1
    assert_books_balance(kernel)
    await kernel.stop()


async def test_a_request_level_error_does_not_trip_the_breaker(tmp_path: Path) -> None:
    d0 = Watched("mock0")
    d0.fail(error=ContextOverflow("the prompt does not fit", param="messages"))
    kernel, admin = await boot(tmp_path, [d0], breaker_threshold=1)
    bad = await ask(kernel, admin)
    end = await done(bad)
    assert isinstance(end.error, ContextOverflow) and bad.faults == 0
    b0 = kernel.scheduler.breakers["mock0"]
    assert b0.state == CLOSED and b0.faults == 0 and b0.failures == 0
    good = await ask(kernel, admin)
    assert (await done(good)).error is None and good.text == reference(good)
    await kernel.stop()


async def test_a_text_mode_device_restarts_only_what_sent_nothing(tmp_path: Path) -> None:
    d0 = TextOnly("mock0")
    d0.fail(after=0)  # before the first token: retried from scratch
    kernel, admin = await boot(tmp_path, [d0])
    req = await ask(kernel, admin, n=10)
    assert (await done(req)).error is None and req.text == reference(req)
    assert d0.started_prompts == [req.snapshot.prompt_ids] * 2 and req.faults == 1
    await until(lambda: kernel.scheduler.breakers["mock0"].state == CLOSED)
    d0.fail(after=4)  # text was streamed: it cannot be replayed silently
    req = await ask(kernel, admin, n=10, text="again")
    end = await done(req)
    assert isinstance(end.error, DeviceError) and "mock0" in end.error.message
    assert "cannot resume" in end.error.message and req.text == reference(req)[:4]
    await kernel.stop()


async def test_a_text_mode_restart_forgets_text_held_back_for_a_stop_string(
    tmp_path: Path,
) -> None:
    d0 = TextOnly("mock0")
    kernel, admin = await boot(tmp_path, [d0])
    probe = await ask(kernel, admin, n=12)
    await done(probe)
    full = probe.text
    stop = full[:5] + "#"  # never matches, but holds back the first 5 characters
    d0.fail(after=5)  # so nothing has been sent when the device fails
    req = await ask(kernel, admin, n=12, stop=[stop])
    assert (await done(req)).error is None
    assert req.text == full and req.faults == 1
    await kernel.stop()


def test_rewind_drops_tokens_whose_text_never_arrived() -> None:
    """A stream cut inside a multi-byte character: the snapshot resumes before it."""
    req = Request(1, "o", "m", "chat", Snapshot([1, 2], SamplingParams(max_tokens=9)))
    req.snapshot.generated_ids = [10, 11, 12]
    req.pending = [Token(11, ""), Token(12, "")]  # bytes of one character, no text yet
    req.rewind(restart=False)
    assert req.snapshot.generated_ids == [10] and req.pending == []


async def test_the_health_monitor_stops_with_the_kernel(tmp_path: Path) -> None:
    kernel, _ = await boot(tmp_path, [Watched("mock0")])
    await until(lambda: kernel.health.rounds >= 2)
    await kernel.stop()
    rounds = kernel.health.rounds
    await asyncio.sleep(0.1)
    assert kernel.health.rounds == rounds


# -- invariants under faults ------------------------------------------------------------------
job = st.tuples(
    st.integers(1, 16),  # max_tokens
    st.integers(0, 3),  # arrival delay, in ms
    st.booleans(),  # killed later?
)
fault = st.tuples(
    st.integers(0, 1),  # which device
    st.integers(1, 3),  # how many generations in a row fail
    st.integers(0, 8),  # after how many tokens
    st.sampled_from(["device", "device", "request"]),  # a device failure, or the request's
)


async def _chaos(
    home: Path,
    policy: str,
    slots: int,
    jobs: list[tuple[int, int, bool]],
    faults: list[Any],
    outage: bool,
) -> None:
    devices = [Watched("mock0", slots=slots, token_delay=0.0005), Watched("mock1", slots=1)]
    for which, times, after, kind in faults:
        error = ContextOverflow("too long", param="messages") if kind == "request" else None
        devices[which].fail(times, after, error)
    kernel, admin = await boot(
        home,
        list(devices),
        policy=policy,
        quantum=3,
        breaker_threshold=2,
        breaker_cooldown_s=0.01,
        health_interval_s=0.01,
        device_wait_s=5.0,
    )
    reqs: list[tuple[Request, bool]] = []
    for i, (n, delay, kill) in enumerate(jobs):
        await asyncio.sleep(delay / 1000)
        if outage and i == len(jobs) // 2:
            devices[1].kill()
        spawned = await kernel.call("proc.spawn", admin, {"name": f"j{i}"})
        who = kernel.authenticate(spawned["token"])
        reqs.append((await ask(kernel, who, n=n, text=f"job {i}"), kill))
    for req, kill in reqs:
        if kill:
            await kernel.call("proc.kill", admin, {"pid": req.pid})
    if outage:
        await asyncio.sleep(0.01)
        devices[1].revive()
    ends = await asyncio.wait_for(asyncio.gather(*(done(r) for r, _ in reqs)), timeout=30)

    for (req, kill), end in zip(reqs, ends, strict=True):
        assert req.events.empty()  # Done was the last event: each ended exactly once
        if req.state == ReqState.FINISHED_LENGTH:
            assert req.text == reference(req)  # unchanged by any fault or switch
        elif req.state == ReqState.FINISHED_ERROR:
            assert isinstance(end.error, ContextOverflow | DeviceError | Unavailable), end.error
            if isinstance(end.error, DeviceError):
                assert req.faults > 3  # out of retries
        else:
            assert kill and req.state == ReqState.FINISHED_ABORTED
    for d in devices:
        assert all(s == CLOSED for s in d.states)  # never dispatched to a tripped device
        assert d.max_in_flight <= d.slots
    await asyncio.sleep(0)
    assert_books_balance(kernel)
    await kernel.stop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    policy=st.sampled_from(POLICY_NAMES),
    slots=st.integers(1, 2),
    jobs=st.lists(job, min_size=1, max_size=10),
    faults=st.lists(fault, max_size=5),
    outage=st.booleans(),
)
def test_invariants_hold_under_faults(
    policy: str, slots: int, jobs: list[Any], faults: list[Any], outage: bool
) -> None:
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(_chaos(Path(home), policy, slots, jobs, faults, outage))


class SlowToAnswer(Watched):
    """Busy: its health endpoint answers late, but it keeps decoding meanwhile."""

    async def health(self) -> bool:
        await asyncio.sleep(10)
        return True


async def test_a_busy_device_that_decodes_is_not_cut_off(tmp_path: Path) -> None:
    dev = SlowToAnswer("busy", token_delay=0.01)
    kernel, admin = await boot(tmp_path, [dev], health_interval_s=0.05, health_timeout_s=0.1)
    req = await ask(kernel, admin, n=60)
    rounds = kernel.health.rounds
    await until(lambda: kernel.health.rounds >= rounds + 2)  # probes timed out meanwhile
    assert kernel.scheduler.breakers["busy"].state == CLOSED
    assert (await done(req)).reason == "length"
    # Idle and silent: a probe that times out now does open the breaker.
    await until(lambda: kernel.scheduler.breakers["busy"].state != CLOSED)
    await kernel.stop()
