"""Batches over HTTP on a live mock server: bad input (the whole file refused, or
line by line in the error file), cancel mid-batch, admission by slots, interactive
requests served while a batch runs, and owners kept apart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.kernel.anomaly import Anomalies
from llmos.params import MAX_FILE_BYTES
from llmos.sdk import ApiError, Client
from tests._live_server import MODEL, LiveServer

CHAT = "/v1/chat/completions"


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        yield c


def line(i: int, **over: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 8}
    return {"custom_id": f"req-{i}", "method": "POST", "url": CHAT, "body": body, **over}


def jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def upload(http: httpx.Client, data: bytes, purpose: str = "batch") -> httpx.Response:
    return http.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": purpose})


def submit(
    http: httpx.Client, data: bytes, *, meta: dict[str, str] | None = None, **over: Any
) -> httpx.Response:
    r = upload(http, data)
    assert r.status_code == 200, r.text
    body = {"input_file_id": r.json()["id"], "endpoint": CHAT, "completion_window": "24h"}
    return http.post("/v1/batches", json={**body, "metadata": meta, **over})


def wait(http: httpx.Client, batch_id: str, until: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = http.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in until:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)


def records(http: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    r = http.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200, r.text
    return [json.loads(x) for x in r.text.splitlines()]


def assert_error(r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param, r.text


# -- the whole file refused at submit ---------------------------------------------
def test_unusable_submissions_are_refused_naming_the_field(http: httpx.Client) -> None:
    good = jsonl([line(0)])
    ok = upload(http, good).json()["id"]
    base = {"input_file_id": ok, "endpoint": CHAT, "completion_window": "24h"}
    cases = [
        ({**base, "input_file_id": "file-00"}, 404, "input_file_id"),
        ({**base, "endpoint": "/v1/embeddings"}, 400, "endpoint"),
        ({**base, "endpoint": "/v1/nope"}, 400, "endpoint"),
        ({**base, "completion_window": "1h"}, 400, "completion_window"),
        (
            {**base, "metadata": {"llmos_max_concurrent": "99"}},
            400,
            "metadata.llmos_max_concurrent",
        ),
        (
            {**base, "metadata": {"llmos_max_concurrent": "two"}},
            400,
            "metadata.llmos_max_concurrent",
        ),
        ({**base, "metadata": {"llmos_token_budget": "7"}}, 400, "metadata.llmos_token_budget"),
        ({**base, "metadata": {"llmos_deadline_s": "-1"}}, 400, "metadata.llmos_deadline_s"),
        ({**base, "metadata": {"llmos_priority": "20"}}, 400, "metadata.llmos_priority"),
        ({**base, "surprise": 1}, 400, "surprise"),
        ({k: v for k, v in base.items() if k != "endpoint"}, 400, "endpoint"),
    ]
    for body, status, param in cases:
        assert_error(http.post("/v1/batches", json=body), status, param)
    for data in (b"", b"\n  \n", b"this is not jsonl\nnor this\n", b"\xff\xfe{}\n"):
        assert_error(submit(http, data), 400, "input_file_id")
    assert_error(upload(http, good, purpose="nonsense"), 400, "purpose")
    r = upload(http, b"x" * (MAX_FILE_BYTES + 1))
    assert r.status_code == 413, r.text
    # a batch's result file is not an input
    done = wait(http, submit(http, good).json()["id"], {"completed"})
    assert_error(
        http.post("/v1/batches", json={**base, "input_file_id": done["output_file_id"]}),
        400,
        "input_file_id",
    )
    assert_error(http.get("/v1/batches/batch_nope"), 404, "batch_id")
    assert_error(http.post("/v1/batches/batch_nope/cancel"), 404, "batch_id")
    assert_error(http.get("/v1/files/file-0123/content"), 404, "file_id")


# -- bad lines go to the error file ------------------------------------------------
def test_bad_lines_are_reported_one_by_one(http: httpx.Client) -> None:
    rows: list[Any] = [
        line(0),
        "{not json",
        {"method": "POST", "url": CHAT, "body": line(1)["body"]},
        line(0),  # duplicate custom_id
        line(2, method="GET"),
        line(3, url="/v1/completions"),
        line(4, body={"model": MODEL}),  # no messages
        line(5, body={**line(5)["body"], "max_tokens": 0}),
        line(6, body="not an object"),
        [1, 2],
        line(7, body={**line(7)["body"], "model": "no-such-model"}),
        line(8),
    ]
    r = submit(http, jsonl(rows))
    assert r.status_code == 200, r.text
    assert r.json()["request_counts"]["total"] == len(rows)
    done = wait(http, r.json()["id"], {"completed"})
    counts = done["request_counts"]
    assert counts == {"total": len(rows), "completed": 2, "failed": len(rows) - 2}
    assert sorted(x["custom_id"] for x in records(http, done["output_file_id"])) == [
        "req-0",
        "req-8",
    ]
    errors = {(e["custom_id"], e["error"]["code"]) for e in records(http, done["error_file_id"])}
    assert errors == {
        (None, "invalid_json"),
        (None, "missing_custom_id"),
        ("req-0", "duplicate_custom_id"),
        ("req-2", "invalid_method"),
        ("req-3", "invalid_url"),
        ("req-4", "invalid_request"),
        ("req-5", "invalid_request"),
        ("req-6", "invalid_body"),
        ("req-7", "not_found"),  # the kernel refused it when it came to run it
    } | {(None, "invalid_json")}
    assert len(records(http, done["error_file_id"])) == len(rows) - 2


# -- cancel, admission, interactive work -------------------------------------------
def test_cancel_mid_batch_keeps_the_finished_lines(http: httpx.Client) -> None:
    rows = [line(i, body={**line(i)["body"], "max_tokens": 64}) for i in range(60)]
    r = submit(http, jsonl(rows), meta={"llmos_max_concurrent": "1"})
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while http.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = http.post(f"/v1/batches/{batch_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled"), r.text
    assert r.json()["cancelling_at"] is not None
    done = wait(http, batch_id, {"cancelled"})
    assert done["cancelled_at"] is not None
    output = records(http, done["output_file_id"])
    errors = records(http, done["error_file_id"])
    assert 2 <= len(output) == done["request_counts"]["completed"] < 60
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    ids = [x["custom_id"] for x in output + errors]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(60))  # each line once
    again = http.post(f"/v1/batches/{batch_id}/cancel").json()
    assert again["status"] == "cancelled"  # a finished batch stays as it is


def test_batches_are_admitted_by_slots_and_leave_interactive_work_running(
    server: LiveServer, http: httpx.Client
) -> None:
    rows = [line(i, body={**line(i)["body"], "max_tokens": 32}) for i in range(30)]
    first = submit(http, jsonl(rows), meta={"llmos_max_concurrent": "2"}).json()
    second = submit(http, jsonl(rows[:3]), meta={"llmos_max_concurrent": "1"}).json()
    wait(http, first["id"], {"in_progress"})
    # both slots are reserved by the first: the second waits, admitted later
    assert http.get(f"/v1/batches/{second['id']}").json()["status"] == "validating"
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "now"}], "max_tokens": 4}
    r = http.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert http.get(f"/v1/batches/{first['id']}").json()["status"] == "in_progress"
    # its process is throughput work: the anomaly detector leaves it alone
    name = f"admin:{first['id']}:jobs"
    [proc] = [p for p in server.kernel.procs.list() if p.name == name]
    assert proc.state.alive and not Anomalies.watched(proc)
    a = wait(http, first["id"], {"completed"})
    b = wait(http, second["id"], {"completed"})
    assert b["in_progress_at"] >= a["in_progress_at"]
    assert (a["request_counts"]["completed"], b["request_counts"]["completed"]) == (30, 3)
    listed = http.get("/v1/batches", params={"limit": 2}).json()
    assert [x["id"] for x in listed["data"]] == [second["id"], first["id"]]
    assert listed["has_more"] is True
    page = http.get("/v1/batches", params={"after": first["id"], "limit": 100}).json()
    assert first["id"] not in [x["id"] for x in page["data"]]


def test_owners_see_only_their_own(server: LiveServer, http: httpx.Client) -> None:
    r = http.post("/v1/users", json={"name": "batchbob", "role": "user"})
    assert r.status_code == 201, r.text
    bob = {"Authorization": f"Bearer {r.json()['token']}"}
    mine = submit(http, jsonl([line(0)])).json()
    file_id = mine["input_file_id"]
    with httpx.Client(base_url=server.url, headers=bob, timeout=30) as other:
        assert_error(other.get(f"/v1/batches/{mine['id']}"), 404, "batch_id")
        assert_error(other.post(f"/v1/batches/{mine['id']}/cancel"), 404, "batch_id")
        assert_error(other.get(f"/v1/files/{file_id}"), 404, "file_id")
        assert_error(other.get(f"/v1/files/{file_id}/content"), 404, "file_id")
        assert_error(other.delete(f"/v1/files/{file_id}"), 404, "file_id")
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
        assert_error(other.post("/v1/batches", json=body), 404, "input_file_id")
        assert other.get("/v1/batches").json()["data"] == []
        assert other.get("/v1/files", params={"purpose": "batch"}).json()["data"] == []
    wait(http, mine["id"], {"completed"})


def test_the_store_listing_still_answers_bare_get(http: httpx.Client) -> None:
    assert http.put("/v1/files/notes/a.txt", content=b"hello").status_code == 200
    data = http.get("/v1/files").json()["data"]
    assert "notes/a.txt" in [f["path"] for f in data]
    assert all("path" in f for f in data)  # no OpenAI file objects in the store's list
    listed = http.get("/v1/files", params={"purpose": "batch", "limit": 1}).json()
    assert [f["object"] for f in listed["data"]] == ["file"]


# -- SDK and CLI -------------------------------------------------------------------
def test_sdk_round_trip(server: LiveServer) -> None:
    with Client(server.url, server.token) as c:
        f = c.file_upload(jsonl([line(0), line(1)]), "two.jsonl")
        assert c.file_get(f["id"])["filename"] == "two.jsonl"
        assert f["id"] in [x["id"] for x in c.file_list()]
        meta = {"llmos_max_concurrent": "1", "llmos_priority": "3"}
        b = c.batch_create(f["id"], metadata=meta)
        assert (b["llmos"]["max_concurrent"], b["llmos"]["priority"]) == (1, 3)
        deadline = time.monotonic() + 30
        while (b := c.batch_get(b["id"]))["status"] != "completed":
            assert time.monotonic() < deadline, b
            time.sleep(0.02)
        # the batch ran in its own process, at its priority, which ended with it
        [proc] = [p for p in c.processes() if p["name"] == f"admin:{b['id']}:jobs"]
        assert (proc["priority"], proc["state"]) == (3, "exited")
        assert proc["requests"] == 2
        out = [json.loads(x) for x in c.file_content(b["output_file_id"]).splitlines()]
        assert sorted(r["custom_id"] for r in out) == ["req-0", "req-1"]
        assert b["id"] in [x["id"] for x in c.batch_list(limit=100)]
        assert c.batch_cancel(b["id"])["status"] == "completed"
        assert c.file_delete(f["id"])["deleted"] is True
        with pytest.raises(ApiError) as err:
            c.batch_get("batch_missing")
        assert err.value.status == 404


def test_cli_submit_watch_ls_get_results_cancel(server: LiveServer, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--url", server.url, "--token", server.token]
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl([line(i) for i in range(5)] + ["{broken"]))
    out = runner.invoke(build_app(), ["batch", "submit", str(src), "--watch", *base])
    assert out.exit_code == 0, out.output
    batch_id = out.output.split("batch_", 1)[1].split()[0]
    batch_id = f"batch_{batch_id}"
    assert "5 completed, 1 failed of 6" in out.output
    assert "output_file_id: file-" in out.output and "error_file_id: file-" in out.output

    out = runner.invoke(build_app(), ["batch", "ls", *base])
    assert out.exit_code == 0 and batch_id in out.output, out.output
    out = runner.invoke(build_app(), ["batch", "get", batch_id, "--json", *base])
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "completed", out.output
    dest = tmp_path / "out.jsonl"
    out = runner.invoke(build_app(), ["batch", "results", batch_id, "-o", str(dest), *base])
    assert out.exit_code == 0 and "5 lines written" in out.output, out.output
    assert len(dest.read_text().splitlines()) == 5
    out = runner.invoke(build_app(), ["batch", "results", batch_id, "--errors", *base])
    assert out.exit_code == 0 and json.loads(out.output)["error"]["code"] == "invalid_json"

    # submit without --watch prints the id; cancel it; errors are one line, exit 1
    slow = tmp_path / "slow.jsonl"
    slow.write_bytes(
        jsonl([line(i, body={**line(i)["body"], "max_tokens": 64}) for i in range(40)])
    )
    out = runner.invoke(build_app(), ["batch", "submit", str(slow), "--max-concurrent", "1", *base])
    assert out.exit_code == 0 and out.output.startswith("batch_"), out.output
    out = runner.invoke(build_app(), ["batch", "cancel", out.output.strip(), *base])
    assert out.exit_code == 0 and ("cancelling" in out.output or "cancelled" in out.output)
    for args, words in [
        (["batch", "get", "batch_nope"], "no batch"),
        (["batch", "submit", str(tmp_path / "missing.jsonl")], "cannot read"),
        (["batch", "submit", str(src), "--endpoint", "/v1/embeddings"], "endpoint"),
        (["batch", "submit", str(src), "--max-concurrent", "64"], "llmos_max_concurrent"),
    ]:
        out = runner.invoke(build_app(), [*args, *base])
        assert out.exit_code in (1, 2) and words in out.output, out.output
        assert "Traceback" not in out.output


def test_a_deadline_expires_the_unfinished_lines(http: httpx.Client) -> None:
    rows = [line(i, body={**line(i)["body"], "max_tokens": 64}) for i in range(80)]
    meta = {"llmos_max_concurrent": "1", "llmos_deadline_s": "1"}
    r = submit(http, jsonl(rows), meta=meta)
    assert r.status_code == 200 and r.json()["llmos"]["deadline_at"], r.text
    done = wait(http, r.json()["id"], {"expired", "completed"})
    assert done["status"] == "expired" and done["expired_at"] is not None, done
    output = records(http, done["output_file_id"])
    errors = records(http, done["error_file_id"])
    assert len(output) == done["request_counts"]["completed"] < 80
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert sorted(x["custom_id"] for x in output + errors) == sorted(f"req-{i}" for i in range(80))
