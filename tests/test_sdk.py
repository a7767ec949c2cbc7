"""The SDK against a live kernel on the mock device, plus wire-level cases through
httpx's transport seam."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

import llmos.sdk
from llmos import LlmosError
from llmos.params import DEFAULT_QUANTUM, POLICY_NAMES
from llmos.sdk import ApiError, AsyncClient, ChatResult, Client, KernelUnreachable
from tests._live_server import MODEL, LiveServer, closed_port_url


def test_public_surface_is_pinned() -> None:
    assert set(llmos.sdk.__all__) == {
        "DEFAULT_URL",
        "ApiError",
        "AsyncClient",
        "ChatResult",
        "Client",
        "KernelUnreachable",
    }
    assert all(hasattr(llmos.sdk, name) for name in llmos.sdk.__all__)
    assert issubclass(KernelUnreachable, ApiError)
    assert issubclass(ApiError, LlmosError)


# -- LLM calls ---------------------------------------------------------------------
def test_models(client: Client) -> None:
    models = client.models()
    assert [m["id"] for m in models] == [MODEL]


def test_chat_with_text_uses_the_first_model(client: Client) -> None:
    result = client.chat("hello", max_tokens=5)
    assert isinstance(result, ChatResult)
    assert len(result.text) == 5  # the mock device makes one character per token
    assert result.finish_reason == "length"
    assert result.usage["completion_tokens"] == 5
    assert result.id.startswith("chatcmpl-")
    assert result.raw["model"] == MODEL


def test_chat_with_messages_and_sampling_options(client: Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    result = client.chat(messages, model=MODEL, max_tokens=3, temperature=0.0, seed=1)
    assert len(result.text) == 3


def test_complete(client: Client) -> None:
    result = client.complete("once upon", max_tokens=4)
    assert len(result.text) == 4
    assert result.id.startswith("cmpl-")
    assert result.usage["prompt_tokens"] == len("once upon")


def test_stream_yields_the_same_text_as_chat(client: Client) -> None:
    deltas = list(client.stream("hello", max_tokens=8))
    assert len(deltas) >= 2
    assert "".join(deltas) == client.chat("hello", max_tokens=8).text


def test_unknown_model_is_an_api_error(client: Client) -> None:
    with pytest.raises(ApiError) as err:
        client.chat("hello", model="no-such-model", max_tokens=2)
    assert 400 <= err.value.status < 500
    assert err.value.param == "model"


# -- processes ---------------------------------------------------------------------
def test_spawn_process_and_kill(client: Client) -> None:
    proc = client.spawn("sdk-agent", priority=7)
    assert proc["name"] == "sdk-agent"
    assert proc["priority"] == 7
    assert proc["state"] == "ready"
    assert proc["token"]
    pid = proc["pid"]
    assert client.process(pid)["name"] == "sdk-agent"
    assert "token" not in client.process(pid)
    assert pid in [p["pid"] for p in client.processes()]
    killed = client.kill(pid)
    assert killed["state"] == "killed"
    assert client.process(pid)["state"] == "killed"


def test_a_process_token_accounts_requests_to_its_process(
    server: LiveServer, client: Client
) -> None:
    proc = client.spawn("accounted")
    with Client(server.url, proc["token"]) as agent:
        agent.chat("hi", max_tokens=3)
        assert [p["pid"] for p in agent.processes()] == [proc["pid"]]
    after = client.process(proc["pid"])
    assert after["requests"] == 1
    assert after["tokens_out"] == 3


def test_killing_a_process_ends_its_stream_with_an_error(
    server: LiveServer, client: Client
) -> None:
    proc = client.spawn("doomed")
    got: list[str] = []
    with Client(server.url, proc["token"]) as agent, pytest.raises(ApiError) as err:
        for delta in agent.stream("go on", max_tokens=3000):
            if not got:
                client.kill(proc["pid"])
            got.append(delta)
    assert got, "the kill should land after the first delta"
    assert len("".join(got)) < 3000
    assert err.value.code == "process_killed"
    assert err.value.status == 409
    assert "killed" in err.value.message


def test_spawn_with_quotas(client: Client) -> None:
    proc = client.spawn("quota-agent", max_concurrent=2, token_budget=100)
    assert (proc["max_concurrent"], proc["token_budget"]) == (2, 100)
    assert proc["preemptions"] == 0
    plain = client.spawn("no-quota-agent")
    assert (plain["max_concurrent"], plain["token_budget"]) == (None, None)
    with pytest.raises(ApiError) as err:
        client.spawn("bad-quota", max_concurrent=0)
    assert (err.value.status, err.value.param) == (400, "max_concurrent")


def test_max_concurrent_is_a_429_with_retry_after(server: LiveServer, client: Client) -> None:
    proc = client.spawn("one-at-a-time", max_concurrent=1)
    with Client(server.url, proc["token"]) as agent:
        first = agent.stream("go on", max_tokens=3000)  # ~6 s on the mock: still running
        try:
            assert next(first)
            with pytest.raises(ApiError) as err:
                next(agent.stream("me too", max_tokens=5))
        finally:
            first.close()
            client.kill(proc["pid"])
    assert (err.value.status, err.value.code) == (429, "quota_exceeded")
    assert err.value.param == "max_concurrent"
    assert err.value.retry_after is not None and err.value.retry_after >= 1
    assert "max_concurrent" in err.value.message


def test_a_used_up_token_budget_is_403(server: LiveServer, client: Client) -> None:
    proc = client.spawn("frugal", token_budget=5)
    with Client(server.url, proc["token"]) as agent:
        agent.chat("hi", max_tokens=4)  # admitted with 0 used; after it, more than 5
        with pytest.raises(ApiError) as err:
            agent.chat("hi again", max_tokens=4)
    assert (err.value.status, err.value.code, err.value.param) == (
        403,
        "quota_exceeded",
        "token_budget",
    )
    assert err.value.retry_after is None  # waiting will not help


# -- scheduler ---------------------------------------------------------------------
def test_scheduler_state(client: Client) -> None:
    state = client.scheduler()
    assert state["policy"] == "fifo"
    assert state["policies"] == list(POLICY_NAMES)
    assert state["quantum"] == DEFAULT_QUANTUM
    for key in ("preemptions", "resumes", "waiting", "max_queue", "max_queue_per_owner"):
        assert isinstance(state[key], int), key
    assert "resume_cache_hit" in state and "decision_us" in state


def test_set_scheduler_round_trip(client: Client) -> None:
    try:
        state = client.set_scheduler("rr", quantum=4)
        assert (state["policy"], state["quantum"]) == ("rr", 4)
        assert client.scheduler()["policy"] == "rr"
        assert client.info()["policy"] == "rr"
        # Unchanged fields stay: a knob alone keeps the policy.
        assert client.set_scheduler(aging_s=2.5)["policy"] == "rr"
        assert client.chat("under rr", max_tokens=9).finish_reason == "length"
    finally:
        state = client.set_scheduler("fifo", quantum=DEFAULT_QUANTUM)
    assert (state["policy"], state["quantum"]) == ("fifo", DEFAULT_QUANTUM)
    assert client.scheduler()["policy"] == "fifo"


def test_unknown_policy_is_rejected(client: Client) -> None:
    with pytest.raises(ApiError) as err:
        client.set_scheduler("bogus")
    assert (err.value.status, err.value.param) == (400, "policy")
    assert "bogus" in err.value.message
    assert client.scheduler()["policy"] == "fifo"


def test_only_admins_set_the_scheduler(server: LiveServer, client: Client) -> None:
    proc = client.spawn("not-root")
    with Client(server.url, proc["token"]) as agent:
        assert agent.scheduler()["policy"] == "fifo"
        with pytest.raises(ApiError) as err:
            agent.set_scheduler("rr")
    assert err.value.status == 403
    assert client.scheduler()["policy"] == "fifo"


# -- system ------------------------------------------------------------------------
def test_info(client: Client) -> None:
    info = client.info()
    assert info["models"] == [MODEL]
    assert info["slots"] == 2
    assert info["policy"] == "fifo"


def test_devices(client: Client) -> None:
    (device,) = client.devices()
    assert device["kind"] == "mock"
    assert device["model"] == MODEL
    assert device["slots"] == 2
    assert device["healthy"] is True


# -- errors ------------------------------------------------------------------------
def test_bad_token_is_401(server: LiveServer) -> None:
    with Client(server.url, "not-a-token") as c, pytest.raises(ApiError) as err:
        c.processes()
    assert err.value.status == 401
    assert err.value.code == "invalid_api_key"


def test_unknown_pid_is_404(client: Client) -> None:
    with pytest.raises(ApiError) as err:
        client.process(987654)
    assert err.value.status == 404
    assert err.value.param == "pid"
    with pytest.raises(ApiError) as err:
        client.kill(987654)
    assert err.value.status == 404


def test_unreachable_kernel() -> None:
    url = closed_port_url()
    with Client(url, "t") as c, pytest.raises(KernelUnreachable) as err:
        c.info()
    assert url in err.value.message
    assert err.value.url == url


def test_unreachable_kernel_while_streaming() -> None:
    with Client(closed_port_url(), "t") as c, pytest.raises(KernelUnreachable):
        list(c.stream("hi", model="m"))


def test_bad_url_is_an_api_error() -> None:
    with pytest.raises(ApiError) as err:
        Client("localhost:8710")
    assert err.value.param == "url"


# -- defaults from the environment -------------------------------------------------
def test_url_and_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_URL", "http://example.invalid:1234/")
    monkeypatch.setenv("LLMOS_TOKEN", "from-env")
    with Client() as c:
        assert c.url == "http://example.invalid:1234"
        assert c.token == "from-env"
    with Client("http://other:1", "explicit") as c:
        assert (c.url, c.token) == ("http://other:1", "explicit")


def test_token_from_the_admin_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLMOS_URL", raising=False)
    monkeypatch.delenv("LLMOS_TOKEN", raising=False)
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    with Client() as c:
        assert c.url == llmos.sdk.DEFAULT_URL
        assert c.token is None
    (tmp_path / "admin-token").write_text("from-file\n")
    with Client() as c:
        assert c.token == "from-file"


# -- the wire, through httpx's transport seam --------------------------------------
def _sse(*events: object) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def _chunk(text: str) -> dict[str, object]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }


def _mock_client(handler: httpx.MockTransport) -> Client:
    return Client("http://kernel.test", "t", transport=handler)


def test_stream_error_event_raises_after_the_deltas_before_it() -> None:
    error = {"message": "process 3 was killed", "type": "process_killed", "param": "pid"}
    body = _sse(_chunk("a"), _chunk("b"), {"error": {**error, "code": "process_killed"}}, "[DONE]")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    got: list[str] = []
    with _mock_client(transport) as c, pytest.raises(ApiError) as err:
        for delta in c.stream("hi", model="m"):
            got.append(delta)
    assert got == ["a", "b"]
    assert (err.value.status, err.value.code, err.value.param) == (409, "process_killed", "pid")
    assert err.value.type == "process_killed"


def test_stream_sends_stream_true_and_skips_comments_and_empty_deltas() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        body = b": keep-alive\n\n" + _sse(_chunk(""), _chunk("x"), {"choices": []}, "[DONE]")
        return httpx.Response(200, content=body)

    with _mock_client(httpx.MockTransport(handler)) as c:
        assert list(c.stream("hi", model="m", stop=["\n"], top_p=0.5)) == ["x"]
    assert seen == [
        {
            "model": "m",
            "stop": ["\n"],
            "top_p": 0.5,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ]


def test_stream_cut_short_is_an_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=_sse(_chunk("a"))))
    with _mock_client(transport) as c, pytest.raises(ApiError) as err:
        list(c.stream("hi", model="m"))
    assert err.value.code == "incomplete_stream"


def test_error_without_a_json_body() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="Bad Gateway"))
    with _mock_client(transport) as c, pytest.raises(ApiError) as err:
        c.info()
    assert (err.value.status, err.value.message) == (502, "Bad Gateway")


def test_success_without_json_is_an_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with _mock_client(transport) as c, pytest.raises(ApiError) as err:
        c.info()
    assert err.value.code == "bad_response"
    assert "http://kernel.test" in err.value.message


def test_default_model_is_asked_for_once() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m1"}]})
        assert json.loads(request.content)["model"] == "m1"
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return httpx.Response(200, json={"id": "c1", "choices": [choice], "usage": {}})

    with _mock_client(httpx.MockTransport(handler)) as c:
        assert c.chat("a").text == "ok"
        assert c.chat("b").finish_reason == "stop"
    assert paths == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]


def test_set_scheduler_and_spawn_send_only_what_is_given() -> None:
    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, json.loads(request.content or b"null")))
        return httpx.Response(200, json={"policy": "fair"})

    with _mock_client(httpx.MockTransport(handler)) as c:
        c.set_scheduler(quantum=4, aging_s=None, weights={"alice": 2})
        c.set_scheduler("fair")
        c.scheduler()
        c.spawn("a")
        c.spawn("b", 3, max_concurrent=2, token_budget=None)
    assert seen == [
        ("PUT", "/v1/sys/scheduler", {"quantum": 4, "weights": {"alice": 2}}),
        ("PUT", "/v1/sys/scheduler", {"policy": "fair"}),
        ("GET", "/v1/sys/scheduler", None),
        ("POST", "/v1/processes", {"name": "a", "priority": 20}),
        ("POST", "/v1/processes", {"name": "b", "priority": 3, "max_concurrent": 2}),
    ]


def _too_many(retry_after: str | None) -> httpx.MockTransport:
    error = {"message": "the run queue is full", "type": "rate_limit_error"}
    body = {"error": {**error, "param": "max_queue", "code": "queue_full"}}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.MockTransport(lambda r: httpx.Response(429, json=body, headers=headers))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7),
        (" 0 ", 0),
        (None, None),
        ("soon", None),
        (formatdate(time.time() - 60, usegmt=True), 0),  # a date in the past: go now
    ],
    ids=["seconds", "padded", "absent", "garbage", "past-date"],
)
def test_retry_after_header(header: str | None, expected: int | None) -> None:
    with _mock_client(_too_many(header)) as c, pytest.raises(ApiError) as err:
        c.chat("hi", model="m")
    assert (err.value.status, err.value.code, err.value.param) == (429, "queue_full", "max_queue")
    assert err.value.retry_after == expected


def test_retry_after_as_an_http_date() -> None:
    header = formatdate(time.time() + 30, usegmt=True)
    with _mock_client(_too_many(header)) as c, pytest.raises(ApiError) as err:
        list(c.stream("hi", model="m"))
    assert err.value.retry_after is not None and 28 <= err.value.retry_after <= 31
    assert "retry_after=" in repr(err.value)


# -- AsyncClient -------------------------------------------------------------------
async def test_async_client(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as c:
        assert [m["id"] for m in await c.models()] == [MODEL]
        result = await c.chat("hello", max_tokens=6)
        assert len(result.text) == 6
        deltas = [d async for d in c.stream("hello", max_tokens=6)]
        assert "".join(deltas) == result.text
        assert len((await c.complete("abc", max_tokens=2)).text) == 2
        proc = await c.spawn("async-agent", priority=3)
        assert (await c.process(proc["pid"]))["priority"] == 3
        assert proc["pid"] in [p["pid"] for p in await c.processes()]
        assert (await c.kill(proc["pid"]))["state"] == "killed"
        assert (await c.info())["models"] == [MODEL]
        assert len(await c.devices()) == 1
        with pytest.raises(ApiError) as err:
            await c.process(987654)
        assert err.value.status == 404


async def test_async_client_scheduler_and_quotas(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as c:
        assert (await c.scheduler())["policy"] == "fifo"
        try:
            state = await c.set_scheduler("rr", quantum=4)
            assert (state["policy"], state["quantum"]) == ("rr", 4)
        finally:
            state = await c.set_scheduler("fifo", quantum=DEFAULT_QUANTUM)
        assert state["policy"] == "fifo"
        with pytest.raises(ApiError) as err:
            await c.set_scheduler("bogus")
        assert err.value.param == "policy"

        proc = await c.spawn("async-quota", max_concurrent=1, token_budget=10_000)
        assert (proc["max_concurrent"], proc["token_budget"]) == (1, 10_000)
        async with AsyncClient(server.url, proc["token"]) as agent:
            first = agent.stream("go on", max_tokens=3000)
            try:
                assert await anext(first)
                with pytest.raises(ApiError) as err:
                    await anext(agent.stream("me too", max_tokens=5))
            finally:
                await first.aclose()
                await c.kill(proc["pid"])
        assert (err.value.status, err.value.param) == (429, "max_concurrent")
        assert err.value.retry_after is not None and err.value.retry_after >= 1


async def test_async_client_unreachable() -> None:
    c = AsyncClient(closed_port_url(), "t")
    try:
        with pytest.raises(KernelUnreachable):
            await c.info()
        with pytest.raises(KernelUnreachable):
            [d async for d in c.stream("hi", model="m")]
    finally:
        await c.aclose()
