"""The `openai` package, unchanged, against a live llmos: files.create, batches.create,
retrieve until done, files.content of the output — on the mock device, and once
with the real model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests._live_server import MODEL, live_server


def _lines(n: int, model: str = MODEL, url: str = "/v1/chat/completions") -> bytes:
    rows = []
    for i in range(n):
        body: dict[str, Any] = {"model": model, "max_tokens": 8, "temperature": 0}
        if url == "/v1/chat/completions":
            body["messages"] = [{"role": "user", "content": f"Say the number {i}."}]
        else:
            body["prompt"] = f"Count to {i}:"
        rows.append({"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body})
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _wait(client: OpenAI, batch_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def _run(client: OpenAI, data: bytes, url: str = "/v1/chat/completions") -> tuple[Any, Any]:
    uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.purpose == "batch"
    assert uploaded.bytes == len(data)
    assert client.files.retrieve(uploaded.id).filename == "requests.jsonl"
    assert client.files.content(uploaded.id).content == data
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=url,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.id.startswith("batch_") and batch.object == "batch"
    assert batch.status in ("validating", "in_progress")
    assert batch.metadata == {"job": "nightly"}
    return uploaded, _wait(client, batch.id)


def test_openai_package_submits_polls_and_downloads(tmp_path: Path) -> None:
    with live_server(tmp_path, slots=2) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=server.token, max_retries=0)
        uploaded, done = _run(client, _lines(12))
        assert done.status == "completed", done
        assert done.request_counts.total == 12
        assert (done.request_counts.completed, done.request_counts.failed) == (12, 0)
        assert done.output_file_id and done.error_file_id is None
        assert done.in_progress_at and done.completed_at
        assert done.completed_at >= done.in_progress_at >= done.created_at
        out = client.files.content(done.output_file_id).text.splitlines()
        records = [json.loads(line) for line in out]
        assert sorted(r["custom_id"] for r in records) == sorted(f"req-{i}" for i in range(12))
        for rec in records:
            assert rec["error"] is None and rec["id"].startswith("batch_req_")
            assert rec["response"]["status_code"] == 200
            body = rec["response"]["body"]
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"]
            assert body["usage"]["completion_tokens"] > 0
        assert (
            client.files.content(done.output_file_id).content
            == "".join(line + "\n" for line in out).encode()
        )  # the same bytes on every read
        meta = client.files.retrieve(done.output_file_id)
        assert meta.purpose == "batch_output" and meta.bytes == len("\n".join(out)) + 1

        listed = client.batches.list(limit=10)
        assert [b.id for b in listed.data] == [done.id]
        files = client.files.list(purpose="batch")
        assert [f.id for f in files.data] == [uploaded.id]
        assert client.files.delete(uploaded.id).deleted
        with pytest.raises(Exception) as err:
            client.files.retrieve(uploaded.id)
        assert getattr(err.value, "status_code", None) == 404


def test_completions_endpoint(tmp_path: Path) -> None:
    with live_server(tmp_path, slots=2) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=server.token, max_retries=0)
        _, done = _run(client, _lines(3, url="/v1/completions"), url="/v1/completions")
        assert done.status == "completed" and done.request_counts.completed == 3
        assert done.output_file_id is not None
        out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        assert {r["response"]["body"]["object"] for r in out} == {"text_completion"}


@pytest.mark.model
@pytest.mark.parametrize("live", ["embedded"], indirect=True)
def test_openai_package_batch_on_the_real_model(live: Any) -> None:
    """One short batch on SmolLM2 (the session's real-model server, embedded)."""
    client = OpenAI(base_url=f"{live.url}/v1", api_key=live.token, max_retries=0)
    _, done = _run(client, _lines(2, model=live.device.model))
    assert done.status == "completed", done
    assert done.output_file_id is not None
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(r["custom_id"] for r in out) == ["req-0", "req-1"]
    for rec in out:
        assert rec["response"]["body"]["choices"][0]["message"]["content"].strip()
