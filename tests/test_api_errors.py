"""Every bad input gets a clear 4xx naming the field — never a 500 or a trace."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import MockKernel

OK_MSGS = [{"role": "user", "content": "hi"}]


def chat(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock", "messages": OK_MSGS, "max_tokens": 4}
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


CASES: list[tuple[str, Any, int, str | None]] = [
    ("missing model", chat(model=...), 400, "model"),
    ("unknown model", chat(model="gpt-9"), 404, "model"),
    ("missing messages", chat(messages=...), 400, "messages"),
    ("empty messages", chat(messages=[]), 400, "messages"),
    ("messages not a list", chat(messages="hi"), 400, "messages"),
    ("message not an object", chat(messages=["hi"]), 400, "messages[0]"),
    ("bad role", chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
    ("bad content", chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    (
        "image part",
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        400,
        "messages[0].content[0]",
    ),
    ("negative max_tokens", chat(max_tokens=-1), 400, "max_tokens"),
    ("zero max_tokens", chat(max_tokens=0), 400, "max_tokens"),
    ("oversize max_tokens", chat(max_tokens=10**6), 400, "max_tokens"),
    ("max_tokens wrong type", chat(max_tokens="many"), 400, "max_tokens"),
    ("temperature wrong type", chat(temperature="hot"), 400, "temperature"),
    ("temperature too high", chat(temperature=5), 400, "temperature"),
    ("top_p zero", chat(top_p=0), 400, "top_p"),
    ("n > 1", chat(n=2), 400, "n"),
    ("stop wrong type", chat(stop=5), 400, "stop"),
    ("too many stops", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("top_logprobs too high", chat(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    ("stream wrong type", chat(stream="yes please"), 400, "stream"),
    ("bad response_format", chat(response_format={"type": "xml"}), 400, "response_format.type"),
    (
        "prompt longer than the context",
        chat(messages=[{"role": "user", "content": "x" * 400}], max_tokens=None),
        400,
        "messages",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
async def test_bad_chat_bodies(
    mock: MockKernel, name: str, body: Any, status: int, param: str | None
) -> None:
    r = await mock.client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["message"] and err["type"]
    assert set(err) == {"message", "type", "param", "code"}


async def test_nothing_was_created_by_bad_input(mock: MockKernel) -> None:
    for _, body, _, _ in CASES:
        await mock.client.post("/v1/chat/completions", json=body)
    assert mock.kernel.procs.list() == []
    assert mock.device.started_prompts == []


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model": "mock", "messages": [', "body"),
        (b"not json at all", "body"),
        (b"", "body"),
        (b"[1, 2, 3]", "body"),
    ],
)
async def test_malformed_json(mock: MockKernel, raw: bytes, param: str | None) -> None:
    r = await mock.client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_json_is_accepted_whatever_the_content_type(mock: MockKernel) -> None:
    # `curl -d` sends application/x-www-form-urlencoded; OpenAI servers read JSON anyway.
    r = await mock.client.post(
        "/v1/chat/completions",
        content=json.dumps(chat()).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


async def test_oversize_body_is_413(mock: MockKernel) -> None:
    big = chat(messages=[{"role": "user", "content": "x" * 100_000}])
    r = await mock.client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["param"] == "body"


async def test_completion_bad_inputs(mock: MockKernel) -> None:
    cases = [
        ({"model": "mock"}, "prompt"),
        ({"model": "mock", "prompt": 5}, "prompt"),
        ({"model": "mock", "prompt": []}, "prompt"),
        ({"model": "mock", "prompt": [-3]}, "prompt"),
        ({"model": "mock", "prompt": "x", "echo": True}, "echo"),
        ({"model": "mock", "prompt": "x", "logprobs": 9}, "logprobs"),
        ({"model": "mock", "prompt": "x" * 300}, "prompt"),
        ({"model": "mock", "prompt": "x", "max_tokens": -5}, "max_tokens"),
    ]
    for body, param in cases:
        r = await mock.client.post("/v1/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())


async def test_auth_errors(mock: MockKernel) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic x"},
    ):
        r = await mock.client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
    r = await mock.client.get("/healthz", headers={"Authorization": ""})
    assert r.status_code == 200


async def test_unknown_pid_route_and_method(mock: MockKernel) -> None:
    r = await mock.client.get("/v1/processes/4242")
    assert r.status_code == 404 and r.json()["error"]["param"] == "pid"
    r = await mock.client.delete("/v1/processes/4242")
    assert r.status_code == 404 and r.json()["error"]["param"] == "pid"
    r = await mock.client.get("/v1/processes/abc")
    assert r.status_code == 400 and r.json()["error"]["param"] == "pid"
    r = await mock.client.get("/v1/nowhere")
    assert r.status_code == 404 and "error" in r.json()
    r = await mock.client.put("/v1/chat/completions", json=chat())
    assert r.status_code == 405 and "error" in r.json()
    r = await mock.client.get("/v1/models/gpt-9")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


async def test_bad_spawn_bodies(mock: MockKernel) -> None:
    for body, param in [
        ({"priority": 99}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"name": ""}, "name"),
        ({"name": "x" * 500}, "name"),
        ({"colour": "red"}, "colour"),
    ]:
        r = await mock.client.post("/v1/processes", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param


async def test_process_token_cannot_widen_or_see_others(mock: MockKernel) -> None:
    a = (await mock.client.post("/v1/processes", json={"name": "a"})).json()
    b = (await mock.client.post("/v1/processes", json={"name": "b"})).json()
    auth = {"Authorization": f"Bearer {a['token']}"}
    wider = {"name": "c", "capabilities": {"syscalls": ["sched.set"]}}
    r = await mock.client.post("/v1/processes", json=wider, headers=auth)
    assert r.status_code == 403 and r.json()["error"]["param"] == "capabilities.syscalls"
    r = await mock.client.post("/v1/processes", json={"name": "c", "priority": 30}, headers=auth)
    assert r.status_code == 403 and r.json()["error"]["param"] == "priority"
    r = await mock.client.get(f"/v1/processes/{b['pid']}", headers=auth)
    assert r.status_code == 404  # existence must not leak
    r = await mock.client.delete(f"/v1/processes/{b['pid']}", headers=auth)
    assert r.status_code == 404
    listed = (await mock.client.get("/v1/processes", headers=auth)).json()["data"]
    assert [p["pid"] for p in listed] == [a["pid"]]


async def test_full_queue_is_429_with_retry_after(mock: MockKernel) -> None:
    mock.kernel.admission.max_queue = 1
    body = chat(max_tokens=200)
    running = [
        await mock.kernel.call("llm.chat", mock.kernel.authenticate("test-admin-token"), body)
        for _ in range(3)
    ]
    r = await mock.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()["error"]
    assert err["param"] == "max_queue" and err["code"] == "queue_full"
    for req in running:
        mock.kernel.cancel(req)


async def test_scheduler_route_errors(mock: MockKernel) -> None:
    r = await mock.client.put("/v1/sys/scheduler", json={"policy": "lottery"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "policy"
    r = await mock.client.put("/v1/sys/scheduler", json={"quantum": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "quantum"
    r = await mock.client.put("/v1/sys/scheduler", json={"color": "red"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "color"
    user = mock.kernel.tokens.issue("alice", "user")[0]
    r = await mock.client.put(
        "/v1/sys/scheduler", json={"policy": "rr"}, headers={"Authorization": f"Bearer {user}"}
    )
    assert r.status_code == 403
    r = await mock.client.put("/v1/sys/scheduler", json={"policy": "mlfq", "quantum": 8})
    assert r.status_code == 200 and r.json()["policy"] == "mlfq" and r.json()["quantum"] == 8


async def test_integers_beyond_64_bits_are_400(mock: MockKernel) -> None:
    huge = 1 << 70
    for body, param in [
        ({"name": "p", "token_budget": huge}, "token_budget"),
        ({"name": "p", "max_concurrent": huge}, "max_concurrent"),
    ]:
        r = await mock.client.post("/v1/processes", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
