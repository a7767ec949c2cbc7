"""Batch jobs on the mock device: the journal's guarantees (on disk before the id is
returned, one completion, recovery after a crash or a stop), the runner (bounded,
low priority, waits out a full queue), access, and every bad input a 4xx naming the
field. Over HTTP in-process; the SDK and the CLI against a live kernel.
The real-model kill -9 test is in test_jobs_crash.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Overloaded
from llmos.kernel import Kernel
from llmos.kernel.journal import TRANSITIONS, JobStatus, Journal, Submitter
from llmos.params import JOB_PRIORITY, JOBS_PER_SLOT, MAX_JOB_ATTEMPTS, Settings
from llmos.sdk import ApiError, AsyncClient, Client
from llmos.sdk._jobs import result_of_job
from tests._live_server import MODEL as LIVE_MODEL
from tests._live_server import LiveServer
from tests.conftest import ADMIN

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TERMINAL = {"completed", "failed", "cancelled"}


class Api:
    """A kernel on the mock device and an in-process HTTP client (admin token)."""

    def __init__(self, kernel: Kernel, device: MockDevice, http: httpx.AsyncClient) -> None:
        self.kernel = kernel
        self.device = device
        self.http = http

    def user(self, owner: str, role: str = "user") -> dict[str, str]:
        token, _ = self.kernel.tokens.issue(owner, role)
        return {"Authorization": f"Bearer {token}"}

    async def submit(
        self, body: dict[str, Any], endpoint: str = CHAT, **kwargs: Any
    ) -> httpx.Response:
        return await self.http.post("/v1/jobs", json={"endpoint": endpoint, "body": body}, **kwargs)

    async def job(self, job_id: str, **kwargs: Any) -> dict[str, Any]:
        r = await self.http.get(f"/v1/jobs/{job_id}", **kwargs)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        return job

    async def wait(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
            await asyncio.sleep(0.01)

    async def wait_status(self, job_id: str, status: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self.job(job_id))["status"] != status:
            assert time.monotonic() < deadline, f"job never became {status}"
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(
    home: Path, device: MockDevice | None = None, **settings: Any
) -> AsyncIterator[Api]:
    device = device or MockDevice(slots=2, context_length=256, token_delay=0.001)
    kernel = Kernel(Settings(home=home, admin_token=ADMIN, **settings), [device])
    await kernel.start()
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://llmos", headers=headers
        ) as http:
            yield Api(kernel, device, http)
    finally:
        await kernel.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running(tmp_path) as a:
        yield a


def chat(content: str = "hello", max_tokens: int = 8, **more: Any) -> dict[str, Any]:
    return {
        "model": "mock",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **more,
    }


def assert_error(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["param"] == param, error
    assert error["message"]
    return error


def journal_rows(home: Path) -> list[sqlite3.Row]:
    """The jobs table, read through a connection of our own."""
    db = sqlite3.connect(str(home / "llmos.db"))
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()


# -- the journal's guarantees -------------------------------------------------------
async def test_the_job_is_on_disk_before_its_id_is_returned(api: Api, tmp_path: Path) -> None:
    api.kernel.jobs.capacity = 0  # nothing runs: the row is exactly what was journaled
    r = await api.submit(chat("durable"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["id"].startswith("job-") and job["status"] == "queued"
    rows = journal_rows(tmp_path)  # another connection sees the committed row at once
    assert [row["id"] for row in rows] == [job["id"]]
    assert rows[0]["status"] == "queued" and rows[0]["owner"] == "admin"
    assert json.loads(rows[0]["request"])["messages"][0]["content"] == "durable"
    journal = api.kernel.jobs.journal.db
    assert journal.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert journal.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_chat_job_gives_what_the_endpoint_gives(api: Api) -> None:
    body = chat("what is a kernel?", max_tokens=12)
    r = await api.submit(body)
    job = await api.wait(r.json()["id"])
    direct = (await api.http.post(CHAT, json=body)).json()
    assert job["status"] == "completed" and job["error"] is None
    assert job["endpoint"] == CHAT and job["kind"] == "chat" and job["attempts"] == 1
    result = job["result"]
    assert result["object"] == "chat.completion"
    assert result["id"] == "chatcmpl-" + job["id"].removeprefix("job-")
    assert result["choices"][0]["message"] == direct["choices"][0]["message"]
    assert result["choices"][0]["finish_reason"] == direct["choices"][0]["finish_reason"]
    assert result["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert result["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"] == 12
    assert set(result) == set(direct)
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    again = await api.http.get(f"/v1/jobs/{job['id']}")
    assert again.json() == job  # the stored result renders the same every time


async def test_a_completion_job_with_logprobs(api: Api) -> None:
    body = {"model": "mock", "prompt": "once upon", "max_tokens": 5, "logprobs": 2}
    job = await api.wait((await api.submit(body, COMPLETIONS)).json()["id"])
    direct = (await api.http.post(COMPLETIONS, json=body)).json()
    assert job["status"] == "completed" and job["endpoint"] == COMPLETIONS
    result = job["result"]
    assert result["object"] == "text_completion"
    assert result["choices"][0]["text"] == direct["choices"][0]["text"]
    assert result["choices"][0]["logprobs"] == direct["choices"][0]["logprobs"]
    assert len(result["choices"][0]["logprobs"]["tokens"]) == 5


def test_a_job_completes_at_most_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "llmos.db")
    try:
        who = Submitter("t1", "alice", "user")
        job, created = journal.add(who, "chat", {"model": "m"})
        assert created and job.status is JobStatus.QUEUED
        claimed = journal.claim()
        assert claimed is not None and claimed.id == job.id and claimed.attempts == 1
        assert journal.claim() is None  # nothing else queued
        assert journal.complete(job.id, {"text": "first"})
        assert not journal.complete(job.id, {"text": "second"})
        assert not journal.fail(job.id, "late", "x")
        assert not journal.cancel(job.id, "late")
        assert not journal.requeue(job.id)
        done = journal.get(job.id)
        assert done is not None and done.status is JobStatus.COMPLETED
        assert done.result == {"text": "first"} and done.error is None
        # a cancelled job is never completed by a request that was still running
        other, _ = journal.add(who, "chat", {"model": "m"})
        journal.claim()
        assert journal.cancel(other.id, "cancelled by alice")
        assert not journal.complete(other.id, {"text": "too late"})
        after = journal.get(other.id)
        assert after is not None and after.status is JobStatus.CANCELLED and after.result is None
    finally:
        journal.close()
    assert all(not TRANSITIONS[s] for s in JobStatus if s.finished)  # terminal is final


def test_jobs_are_taken_fairly_across_owners(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "llmos.db")
    try:
        alice, bob = Submitter("t1", "alice", "user"), Submitter("t2", "bob", "user")
        big = [journal.add(alice, "chat", {"n": i})[0].id for i in range(5)]
        small = journal.add(bob, "chat", {"n": 0})[0].id
        order = []
        while (job := journal.claim()) is not None:
            order.append(job.id)
        # bob's one job does not wait behind alice's whole batch
        assert order == [big[0], small, *big[1:]]
    finally:
        journal.close()


async def test_a_crash_requeues_running_jobs_and_keeps_completed_ones(tmp_path: Path) -> None:
    # The state a kill -9 leaves: one job completed, two running, one queued, and
    # one that was running on its last allowed attempt.
    journal = Journal(tmp_path / "llmos.db")
    who = Submitter("admin-env", "admin", "admin")
    ids = [journal.add(who, "chat", chat(f"job {i}"))[0].id for i in range(5)]
    for _ in range(3):
        journal.claim()
    kept = {"model": "mock", "text": "kept", "finish_reason": "stop", "created": 1}
    kept |= {"prompt_tokens": 1, "completion_tokens": 1, "cached_tokens": 0, "tokens": None}
    journal.complete(ids[0], kept)
    journal.db.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (MAX_JOB_ATTEMPTS, ids[2]))
    before = {r["id"]: dict(r) for r in journal_rows(tmp_path)}
    journal.close()

    async with running(tmp_path) as api:
        jobs = [await api.wait(i) for i in ids]
    assert [j["status"] for j in jobs] == ["completed", "completed", "failed"] + ["completed"] * 2
    assert dict(journal_rows(tmp_path)[0]) == before[ids[0]]  # untouched, byte for byte
    assert jobs[0]["result"]["choices"][0]["message"]["content"] == "kept"
    assert jobs[1]["attempts"] == 2  # the interrupted start counts
    assert jobs[3]["attempts"] == 1
    assert jobs[2]["error"]["code"] == "interrupted"
    assert str(MAX_JOB_ATTEMPTS) in jobs[2]["error"]["message"]


async def test_a_graceful_stop_gives_running_jobs_back(tmp_path: Path) -> None:
    slow = MockDevice(slots=2, context_length=256, token_delay=0.02)
    async with running(tmp_path, slow) as api:
        ids = [(await api.submit(chat(f"job {i}", 100))).json()["id"] for i in range(3)]
        await api.wait_status(ids[0], "running")
    rows = journal_rows(tmp_path)
    assert [r["status"] for r in rows] == ["queued"] * 3
    assert [r["attempts"] for r in rows] == [0, 0, 0]  # a stop is not a failed attempt
    async with running(tmp_path) as api:
        jobs = [await api.wait(i) for i in ids]
    assert [(j["status"], j["attempts"]) for j in jobs] == [("completed", 1)] * 3


async def test_a_job_for_a_model_no_longer_served_fails_with_the_reason(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        api.kernel.jobs.capacity = 0
        job_id = (await api.submit(chat())).json()["id"]
    other = MockDevice(model="other", slots=1, context_length=256)
    async with running(tmp_path, other) as api:
        job = await api.wait(job_id)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["code"] == "not_found" and "mock" in job["error"]["message"]


# -- the runner ---------------------------------------------------------------------
async def test_jobs_run_a_bounded_number_at_a_time_at_batch_priority(tmp_path: Path) -> None:
    device = MockDevice(slots=2, context_length=256, token_delay=0.002)
    async with running(tmp_path, device) as api:
        capacity = api.kernel.jobs.capacity
        assert capacity == 2 * JOBS_PER_SLOT
        ids = [(await api.submit(chat(f"job {i}", 40))).json()["id"] for i in range(16)]
        # An interactive request waits behind the jobs already on the run queue
        # only, not behind all sixteen.
        r = await api.http.post(CHAT, json=chat("interactive", 8))
        assert r.status_code == 200, r.text
        done_by_then = sum(1 for r in journal_rows(tmp_path) if r["status"] == "completed")
        assert done_by_then <= capacity
        peak = 0
        while True:
            rows = journal_rows(tmp_path)
            peak = max(peak, sum(1 for r in rows if r["status"] == "running"))
            assert api.kernel.scheduler.num_waiting() + api.kernel.scheduler.num_running() <= (
                capacity
            )
            if all(r["status"] == "completed" for r in rows):
                break
            await asyncio.sleep(0.005)
        assert 1 <= peak <= capacity
        procs = [p for p in api.kernel.procs.list() if p.name == "admin:jobs"]
        assert len(procs) == 1 and procs[0].priority == JOB_PRIORITY
        assert procs[0].requests == len(ids) and procs[0].tokens_out == 40 * len(ids)


async def test_a_full_run_queue_delays_jobs_but_never_fails_them(tmp_path: Path) -> None:
    device = MockDevice(slots=1, context_length=256, token_delay=0.001)
    async with running(tmp_path, device, max_queue=1, max_queue_per_owner=1) as api:
        api.kernel.jobs.capacity = 4  # more jobs than the run queue takes
        refused = 0
        enqueue = api.kernel.enqueue

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal refused
            try:
                return enqueue(*args, **kwargs)
            except Overloaded:
                refused += 1
                raise

        api.kernel.enqueue = counting  # type: ignore[method-assign]
        ids = [(await api.submit(chat(f"job {i}", 4))).json()["id"] for i in range(4)]
        jobs = [await api.wait(i, timeout=60) for i in ids]
    assert refused > 0  # the 429s happened, and cost no job
    assert [j["status"] for j in jobs] == ["completed"] * 4
    assert all(j["attempts"] == 1 for j in jobs)


async def test_a_device_fault_does_not_lose_the_job(api: Api) -> None:
    api.device.fail(times=1, after=2)
    job = await api.wait((await api.submit(chat("fragile", 10))).json()["id"])
    assert job["status"] == "completed", job
    assert job["result"]["usage"]["completion_tokens"] == 10
    assert 1 <= job["attempts"] <= 2


# -- cancellation -------------------------------------------------------------------
async def test_cancel_a_queued_job(api: Api) -> None:
    api.kernel.jobs.capacity = 0
    job_id = (await api.submit(chat())).json()["id"]
    r = await api.http.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "cancelled" and job["result"] is None
    assert job["error"] == {"message": "cancelled by admin", "code": "cancelled"}
    api.kernel.jobs.capacity = 4
    later = await api.wait((await api.submit(chat("later"))).json()["id"])
    assert later["status"] == "completed"  # the runner ran what was queued after it...
    job = await api.job(job_id)
    assert job["status"] == "cancelled" and job["attempts"] == 0  # ...and never started it


async def test_cancel_a_running_job_stops_its_generation(tmp_path: Path) -> None:
    slow = MockDevice(slots=1, context_length=256, token_delay=0.01)
    async with running(tmp_path, slow) as api:
        job_id = (await api.submit(chat("long", 200))).json()["id"]
        deadline = time.monotonic() + 10
        while slow.in_flight == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        job = (await api.http.delete(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "cancelled"
        while slow.in_flight:  # the slot frees at the next token
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        assert api.kernel.scheduler.num_running() == 0
        assert (await api.job(job_id))["status"] == "cancelled"


async def test_cancel_a_finished_job_leaves_it(api: Api) -> None:
    job = await api.wait((await api.submit(chat())).json()["id"])
    r = await api.http.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json() == job


# -- idempotency --------------------------------------------------------------------
async def test_the_same_idempotency_key_returns_the_same_job(api: Api) -> None:
    key = {"Idempotency-Key": "batch-7-line-1"}
    first = await api.submit(chat("once"), headers=key)
    again = await api.submit(chat("once"), headers=key)
    assert first.status_code == again.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == "batch-7-line-1"
    assert len(journal_rows(api.kernel.settings.home)) == 1
    assert_error(await api.submit(chat("different"), headers=key), 400, "idempotency_key")
    # keys are per owner: another user's same key is their own job
    bob = {**api.user("bob"), **key}
    assert (await api.submit(chat("once"), headers=bob)).json()["id"] != first.json()["id"]
    assert_error(
        await api.submit(chat(), headers={"Idempotency-Key": "k" * 256}), 400, "idempotency_key"
    )


# -- access -------------------------------------------------------------------------
async def test_owners_see_and_cancel_only_their_jobs(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    mine = (await api.submit(chat("alice's"), headers=alice)).json()
    assert mine["owner"] == "alice" and mine["submitted_by"]["role"] == "user"
    r = await api.http.get(f"/v1/jobs/{mine['id']}", headers=bob)
    assert_error(r, 404, "id")
    assert_error(await api.http.delete(f"/v1/jobs/{mine['id']}", headers=bob), 404, "id")
    assert (await api.http.get("/v1/jobs", headers=bob)).json()["data"] == []
    assert_error(await api.http.get("/v1/jobs?owner=alice", headers=bob), 404, "owner")
    listed = (await api.http.get("/v1/jobs", headers=alice)).json()["data"]
    assert [j["id"] for j in listed] == [mine["id"]]
    everyone = (await api.http.get("/v1/jobs")).json()["data"]  # the admin sees all
    assert [j["id"] for j in everyone] == [mine["id"]]
    assert (await api.job(mine["id"]))["owner"] == "alice"
    assert_error(await api.http.get("/v1/jobs/job-nope"), 404, "id")


async def test_a_process_submits_for_its_owner_until_killed(api: Api) -> None:
    alice = api.user("alice")
    proc = (await api.http.post("/v1/processes", json={"name": "agent"}, headers=alice)).json()
    agent = {"Authorization": f"Bearer {proc['token']}"}
    job = (await api.submit(chat("from an agent"), headers=agent)).json()
    assert job["owner"] == "alice"
    assert job["submitted_by"] == {
        "token_id": job["submitted_by"]["token_id"],
        "role": "process",
        "pid": proc["pid"],
    }
    done = await api.wait(job["id"])
    assert done["status"] == "completed"
    assert (await api.http.get(f"/v1/jobs/{job['id']}", headers=alice)).status_code == 200
    await api.http.delete(f"/v1/processes/{proc['pid']}", headers=alice)
    r = await api.submit(chat(), headers=agent)
    assert r.status_code in (401, 409), r.text  # a dead process's token submits nothing


async def test_a_viewer_reads_but_does_not_submit(api: Api) -> None:
    viewer = api.user("vera", "viewer")
    assert (await api.http.get("/v1/jobs", headers=viewer)).status_code == 200
    r = await api.submit(chat(), headers=viewer)
    assert r.status_code == 403, r.text
    assert len(journal_rows(api.kernel.settings.home)) == 0


async def test_no_token_no_jobs(api: Api) -> None:
    r = await api.http.get("/v1/jobs", headers={"Authorization": ""})
    assert r.status_code == 401


# -- bad input: a 4xx naming the field, and no job ------------------------------------
@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"body": chat()}, 400, "endpoint"),
        ({"endpoint": "/v1/embeddings", "body": chat()}, 400, "endpoint"),
        ({"endpoint": CHAT}, 400, "body"),
        ({"endpoint": CHAT, "body": "hello"}, 400, "body"),
        ({"endpoint": CHAT, "body": chat(), "priority": 3}, 400, "priority"),
        ({"endpoint": CHAT, "body": {**chat(), "messages": []}}, 400, "body.messages"),
        ({"endpoint": CHAT, "body": {"model": "mock"}}, 400, "body.messages"),
        ({"endpoint": CHAT, "body": chat(stream=True)}, 400, "body.stream"),
        ({"endpoint": CHAT, "body": chat(max_tokens=0)}, 400, "body.max_tokens"),
        ({"endpoint": CHAT, "body": chat(max_tokens=5000)}, 400, "body.max_tokens"),
        ({"endpoint": CHAT, "body": chat(temperature=7)}, 400, "body.temperature"),
        ({"endpoint": CHAT, "body": chat(model="nope")}, 404, "body.model"),
        (
            {"endpoint": CHAT, "body": {**chat(), "messages": [{"role": "wizard"}]}},
            400,
            "body.messages[0].role",
        ),
        ({"endpoint": COMPLETIONS, "body": {"model": "mock"}}, 400, "body.prompt"),
        ({"endpoint": COMPLETIONS, "body": {"model": "mock", "prompt": ""}}, 400, "body.prompt"),
        (
            {"endpoint": COMPLETIONS, "body": {"model": "mock", "prompt": "x" * 300}},
            400,
            "body.prompt",
        ),
    ],
)
async def test_bad_jobs_are_refused_naming_the_field(
    api: Api, payload: dict[str, Any], status: int, param: str
) -> None:
    assert_error(await api.http.post("/v1/jobs", json=payload), status, param)
    assert journal_rows(api.kernel.settings.home) == []


async def test_malformed_json_is_refused(api: Api) -> None:
    r = await api.http.post("/v1/jobs", content=b"{not json")
    assert_error(r, 400, "body")


async def test_listing_filters_and_pages(api: Api) -> None:
    api.kernel.jobs.capacity = 0
    ids = [(await api.submit(chat(f"job {i}"))).json()["id"] for i in range(5)]
    await api.http.delete(f"/v1/jobs/{ids[1]}")
    page = (await api.http.get("/v1/jobs?limit=2")).json()["data"]
    assert [j["id"] for j in page] == [ids[4], ids[3]]  # newest first
    assert "result" not in page[0] and "request" not in page[0]
    rest = (await api.http.get(f"/v1/jobs?before={ids[3]}")).json()["data"]
    assert [j["id"] for j in rest] == [ids[2], ids[1], ids[0]]
    cancelled = (await api.http.get("/v1/jobs?status=cancelled")).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    assert_error(await api.http.get("/v1/jobs?status=done"), 400, "status")
    assert_error(await api.http.get("/v1/jobs?limit=0"), 400, "limit")
    assert_error(await api.http.get("/v1/jobs?before=job-nope"), 404, "before")


# -- SDK and CLI, against a live kernel on the mock device ---------------------------
def test_sdk_jobs(client: Client) -> None:
    job = client.submit_job("hello", max_tokens=6, temperature=0, idempotency_key="sdk-1")
    assert job["status"] in ("queued", "running", "completed")
    assert (
        client.submit_job("hello", max_tokens=6, temperature=0, idempotency_key="sdk-1")["id"]
        == job["id"]
    )
    done = client.wait_job(job["id"], timeout=30)
    assert done["status"] == "completed"
    assert result_of_job(done).text == client.chat("hello", max_tokens=6, temperature=0).text
    assert client.job(job["id"]) == done
    assert job["id"] in [j["id"] for j in client.jobs(status="completed")]
    text = client.submit_job(prompt="once upon a time", max_tokens=4)
    assert client.wait_job(text["id"], timeout=30)["endpoint"] == COMPLETIONS
    assert client.cancel_job(job["id"])["status"] == "completed"
    with pytest.raises(ApiError) as info:
        client.job("job-unknown")
    assert info.value.status == 404 and info.value.param == "id"
    with pytest.raises(ApiError) as info:
        client.submit_job("hi", max_tokens=0)
    assert info.value.status == 400 and info.value.param == "body.max_tokens"
    with pytest.raises(ApiError):
        client.submit_job()  # neither messages nor prompt


def test_sdk_wait_times_out_with_a_clear_error(client: Client) -> None:
    job = client.submit_job("a long one", max_tokens=2000, model=LIVE_MODEL)
    with pytest.raises(ApiError) as info:
        client.wait_job(job["id"], timeout=0.05)
    assert info.value.code == "timeout" and job["id"] in info.value.message
    assert client.cancel_job(job["id"])["status"] == "cancelled"
    with pytest.raises(ApiError) as info:
        result_of_job(client.job(job["id"]))
    assert "cancelled" in info.value.message


async def test_async_sdk_jobs(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as c:
        job = await c.submit_job([{"role": "user", "content": "hi"}], max_tokens=5)
        done = await c.wait_job(job["id"], timeout=30)
        assert done["status"] == "completed"
        assert (await c.job(job["id"]))["result"] == done["result"]
        assert job["id"] in [j["id"] for j in await c.jobs()]
        assert (await c.cancel_job(job["id"]))["status"] == "completed"


def cli(server: LiveServer, *args: str) -> Result:
    return CliRunner().invoke(build_app(), [*args, "--url", server.url, "--token", server.token])


def test_cli_jobs(server: LiveServer, client: Client) -> None:
    submitted = cli(server, "jobs", "submit", "hello there", "--max-tokens", "6")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert job_id.startswith("job-")
    client.wait_job(job_id, timeout=30)
    got = cli(server, "jobs", "get", job_id)
    assert got.exit_code == 0 and "completed" in got.stdout
    answer = client.chat("hello there", max_tokens=6).text
    waited = cli(server, "jobs", "wait", job_id)
    assert waited.exit_code == 0 and waited.stdout == answer + "\n"
    as_json = cli(server, "jobs", "get", job_id, "--json")
    assert json.loads(as_json.stdout)["id"] == job_id
    listed = cli(server, "jobs", "ls", "--status", "completed")
    assert listed.exit_code == 0 and job_id in listed.stdout
    direct = cli(server, "jobs", "submit", "hi", "--max-tokens", "4", "--wait", "--completion")
    assert direct.exit_code == 0, direct.output
    assert direct.stdout == client.complete("hi", max_tokens=4).text + "\n"
    cancelled = cli(server, "jobs", "cancel", job_id)
    assert cancelled.exit_code == 0 and "already completed" in cancelled.stdout


def test_cli_job_errors_are_one_line(server: LiveServer) -> None:
    for args in (
        ("jobs", "get", "job-nope"),
        ("jobs", "cancel", "job-nope"),
        ("jobs", "submit", "hi", "--max-tokens", "0"),
        ("jobs", "ls", "--status", "done"),
    ):
        result = cli(server, *args)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    too_long = cli(server, "jobs", "submit", "x", "--max-tokens", "5000")
    assert too_long.exit_code == 1 and "max_tokens" in too_long.stderr
    usage = cli(server, "jobs", "submit", "x", "--completion", "--system", "s")
    assert usage.exit_code == 2 and "--system" in usage.stderr
