"""The job journal survives kill -9: a real kernel (`llmos up`, embedded SmolLM2) in
a subprocess takes 50 jobs, is killed with SIGKILL while they run, and a second
kernel on the same LLMOS_HOME brings every one of them to a terminal state — the
ones completed before the crash untouched, the interrupted ones started over, none
completed twice, none lost, none duplicated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmos.devices.catalog import default_model_path
from llmos.params import JOB_PRIORITY
from tests._upkernel import tail, up

pytestmark = pytest.mark.model

TOKEN = "crash-test-admin"
MODEL = "SmolLM2-135M-Instruct"
JOBS = 50
TERMINAL = {"completed", "failed", "cancelled"}


@contextlib.contextmanager
def kernel(home: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """`llmos up` on 127.0.0.1 with the real model; always killed and reaped."""
    model = ["--model", str(default_model_path()), "--model-name", MODEL]
    sizes = ["--slots", "4", "--ctx", "512", "--threads", "2"]
    with up(home, log, TOKEN, *model, *sizes) as running:
        yield running


def rows(home: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = sqlite3.connect(str(home / "llmos.db"), timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


def listing(http: httpx.Client) -> list[dict[str, Any]]:
    r = http.get("/v1/jobs", params={"limit": 1000})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def body(i: int) -> dict[str, Any]:
    question = f"In one short sentence, what is {i} plus {i}?"
    return {
        "endpoint": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 32,
            "temperature": 0,
        },
    }


def test_kill_9_loses_no_job_and_completes_none_twice(tmp_path: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "kernel.log"
    with kernel(home, log) as (proc, http):
        ids = []
        for i in range(JOBS):
            r = http.post("/v1/jobs", json=body(i), headers={"Idempotency-Key": f"line-{i}"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        # Kill while some jobs are done and others are on the run queue or decoding.
        deadline = time.monotonic() + 300
        while True:
            status = [j["status"] for j in listing(http)]
            if status.count("completed") >= 5 and status.count("running") >= 2:
                break
            assert time.monotonic() < deadline, f"no progress: {status}\n{tail(log)}"
            time.sleep(0.05)
        seen = {}  # what clients were shown before the crash, byte for byte
        for job_id in ids:
            r = http.get(f"/v1/jobs/{job_id}")
            if r.json()["status"] == "completed":
                seen[job_id] = r.content
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    crashed = {r["id"]: r for r in rows(home, "SELECT * FROM jobs")}
    assert sorted(crashed) == sorted(ids)  # every acknowledged job is on disk
    done_at_crash = {i for i, r in crashed.items() if r["status"] == "completed"}
    interrupted = {i for i, r in crashed.items() if r["status"] == "running"}
    assert set(seen) <= done_at_crash  # no completion a client saw was lost
    assert interrupted, "the kill landed when no job was running"
    assert len(done_at_crash) < JOBS

    restarted_at = time.time()
    with kernel(home, log) as (_, http):
        deadline = time.monotonic() + 900
        while True:
            jobs = listing(http)
            if all(j["status"] in TERMINAL for j in jobs):
                break
            assert time.monotonic() < deadline, f"jobs left unfinished:\n{tail(log)}"
            time.sleep(0.2)
        for job_id, before in seen.items():  # results shown before the crash: unchanged
            assert http.get(f"/v1/jobs/{job_id}").content == before
        final = {job_id: http.get(f"/v1/jobs/{job_id}").json() for job_id in ids}
        # A client retrying a submission after the crash gets the same job back.
        again = http.post("/v1/jobs", json=body(7), headers={"Idempotency-Key": "line-7"})
        assert again.status_code == 202 and again.json()["id"] == ids[7]
        assert again.headers["Idempotent-Replayed"] == "true"

    assert len(jobs) == JOBS and sorted(j["id"] for j in jobs) == sorted(ids)  # 50, distinct
    assert len(rows(home, "SELECT id FROM jobs")) == JOBS  # no duplicate rows
    for job in final.values():
        assert job["status"] in TERMINAL, job
        if job["status"] == "completed":
            answer = job["result"]["choices"][0]["message"]["content"]
            assert answer.strip(), job  # a real answer
            assert job["result"]["usage"]["completion_tokens"] > 0
        else:
            assert job["error"]["message"], job  # a reason
    assert all(final[i]["status"] == "completed" for i in done_at_crash)
    for job_id in done_at_crash:  # the journal's result bytes never changed
        after = rows(home, "SELECT result, attempts FROM jobs WHERE id = ?", (job_id,))[0]
        assert after["result"] == crashed[job_id]["result"]
        assert after["attempts"] == crashed[job_id]["attempts"] == 1
    for job_id in interrupted:  # started over from the beginning, once more
        assert final[job_id]["attempts"] == crashed[job_id]["attempts"] + 1
    completed = sum(1 for j in final.values() if j["status"] == "completed")
    assert completed == JOBS, {i: j["error"] for i, j in final.items() if j["error"]}

    # No job ran to completion twice: after the restart the engine finished exactly
    # one generation per job that was not already complete.
    [jobs_proc] = rows(home, "SELECT pid, priority FROM processes WHERE name = 'admin:jobs'")
    assert jobs_proc["priority"] == JOB_PRIORITY
    finished_after = rows(
        home,
        "SELECT COUNT(*) AS n FROM telemetry WHERE pid = ? AND created_at >= ?"
        " AND finish_reason IN ('stop', 'length')",
        (jobs_proc["pid"], restarted_at),
    )[0]["n"]
    assert finished_after == JOBS - len(done_at_crash)
    print(
        json.dumps(
            {
                "jobs": JOBS,
                "completed_before_kill": len(done_at_crash),
                "running_at_kill": len(interrupted),
                "queued_at_kill": JOBS - len(done_at_crash) - len(interrupted),
                "terminal_after_restart": len(final),
            }
        )
    )
