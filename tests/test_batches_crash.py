"""A batch survives kill -9: `llmos up` (mock device) in a subprocess runs a batch,
is killed with SIGKILL mid-batch, and a second kernel on the same LLMOS_HOME
finishes it — every line in the output or error file exactly once."""

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

from tests._upkernel import tail, up

TOKEN = "batch-crash-admin"
LINES = 400
BAD = ("not json at all", '{"custom_id": "req-7", "method": "POST"}')  # malformed, duplicate


@contextlib.contextmanager
def kernel(home: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """`llmos up --device mock` on 127.0.0.1; always killed and reaped."""
    with up(home, log, TOKEN, "--device", "mock", "--slots", "2", wait_s=60) as running:
        yield running


def _input() -> bytes:
    rows = [
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "mock",
                    "messages": [{"role": "user", "content": f"line {i}"}],
                    "max_tokens": 64,
                },
            }
        )
        for i in range(LINES)
    ]
    rows[100:100] = BAD
    return ("\n".join(rows) + "\n").encode()


def _batch(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    r = http.get(f"/v1/batches/{batch_id}")
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return got


def _records(http: httpx.Client, file_id: str) -> list[dict[str, Any]]:
    r = http.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def test_kill_9_mid_batch_loses_and_duplicates_no_line(tmp_path: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "kernel.log"
    with kernel(home, log) as (proc, http):
        r = http.post(
            "/v1/files", files={"file": ("in.jsonl", _input())}, data={"purpose": "batch"}
        )
        assert r.status_code == 200, r.text
        create = {
            "input_file_id": r.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"llmos_max_concurrent": "2"},
        }
        r = http.post("/v1/batches", json=create)
        assert r.status_code == 200, r.text
        batch_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while True:  # kill once some lines are done and most are not
            counts = _batch(http, batch_id)["request_counts"]
            if counts["completed"] >= 20:
                break
            assert time.monotonic() < deadline, f"no progress: {counts}\n{tail(log)}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    db = sqlite3.connect(str(home / "llmos.db"))
    status, done_at_kill = db.execute(
        "SELECT status, completed FROM batches WHERE id = ?", (batch_id,)
    ).fetchone()
    db.close()
    assert status == "in_progress" and done_at_kill < LINES - 50, (status, done_at_kill)

    with kernel(home, log) as (_, http):
        deadline = time.monotonic() + 300
        while (batch := _batch(http, batch_id))["status"] != "completed":
            assert batch["status"] == "in_progress", batch
            assert time.monotonic() < deadline, f"the batch never ended:\n{tail(log)}"
            time.sleep(0.1)
        assert batch["request_counts"] == {"total": LINES + 2, "completed": LINES, "failed": 2}
        output = _records(http, batch["output_file_id"])
        errors = _records(http, batch["error_file_id"])

    ids = [rec["custom_id"] for rec in output]
    assert len(ids) == len(set(ids)) == LINES  # none twice, none lost
    assert set(ids) == {f"req-{i}" for i in range(LINES)}
    assert all(rec["response"]["status_code"] == 200 for rec in output)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        (None, "invalid_json"),
        ("req-7", "duplicate_custom_id"),
    ]
    # One job per runnable line in the journal: no line was submitted twice.
    db = sqlite3.connect(str(home / "llmos.db"))
    keys = [k for (k,) in db.execute("SELECT idempotency_key FROM jobs WHERE status = 'completed'")]
    db.close()
    assert len(keys) == len(set(keys)) == LINES
