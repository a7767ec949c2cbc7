"""Device faults as clients see them over HTTP (a completed answer, or after bounded
retries or waits a clear 502/503, streamed as an error event then [DONE]); breaker
state in sys.devices and /metrics; and the HTTP driver telling a device failure from
an error of the request itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmos.api import create_app
from llmos.devices import OpenAIHttpDevice
from llmos.errors import ContextOverflow, DeviceError, InvalidRequest, LlmosError
from llmos.kernel import Kernel
from llmos.types import Finished, SamplingParams, Snapshot, Token
from tests._faults import ADMIN, OPEN, Watched, boot, chat_args, until


# -- what clients see over HTTP --------------------------------------------------------------
@asynccontextmanager
async def api(kernel: Kernel) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=headers, timeout=30
    ) as client:
        yield client


def sse(body: str) -> list[Any]:
    out: list[Any] = []
    for line in body.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(events: list[Any]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices") or []
    )


async def test_clients_see_a_completed_answer(tmp_path: Path) -> None:
    d0, d1 = Watched("mock0"), Watched("mock1")
    kernel, _ = await boot(tmp_path, [d0, d1])
    async with api(kernel) as c:
        clean = (await c.post("/v1/chat/completions", json=chat_args(30))).json()
        expected = clean["choices"][0]["message"]["content"]
        d0.fail(after=7)
        r = await c.post("/v1/chat/completions", json=chat_args(30, stream=True))
        events = sse(r.text)
        assert r.status_code == 200 and events[-1] == "[DONE]"
        assert streamed_text(events) == expected
        assert not any("error" in e for e in events if isinstance(e, dict))
        d1.fail(after=3)
        d0.fail(after=11)
        r = await c.post("/v1/chat/completions", json=chat_args(30))
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == expected
        assert r.json()["usage"]["completion_tokens"] == 30
    await kernel.stop()


async def test_clients_get_a_clear_error_after_bounded_retries(tmp_path: Path) -> None:
    d0 = Watched("mock0")
    kernel, _ = await boot(tmp_path, [d0], device_retries=1, breaker_threshold=10)
    async with api(kernel) as c:
        d0.fail(times=2, after=2)
        r = await c.post("/v1/chat/completions", json=chat_args(10))
        assert r.status_code == 502
        error = r.json()["error"]
        assert error["type"] == "device_error" and "mock0" in error["message"]
        d0.fail(times=2, after=2)
        r = await c.post("/v1/chat/completions", json=chat_args(10, stream=True))
        events = sse(r.text)
        assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "device_error"
        assert "mock0" in events[-2]["error"]["message"]
        assert len(streamed_text(events)) == 4  # 2 tokens per attempt, then the error
    await kernel.stop()


async def test_clients_get_503_when_no_device_returns(tmp_path: Path) -> None:
    d0 = Watched("mock0")
    kernel, _ = await boot(tmp_path, [d0], device_wait_s=0.1)
    d0.kill()
    async with api(kernel) as c:
        for stream in (False, True):
            r = await c.post("/v1/chat/completions", json=chat_args(10, stream=stream))
            if stream:
                events = sse(r.text)
                assert events[-1] == "[DONE]"
                error = events[-2]["error"]
            else:
                assert r.status_code == 503
                error = r.json()["error"]
            assert error["type"] == "unavailable" and "mock0" in error["message"]
    await kernel.stop()


async def test_breaker_state_and_health_in_sys_devices_and_metrics(tmp_path: Path) -> None:
    d0, d1 = Watched("mock0"), Watched("mock1")
    d0.healthy = False
    kernel, _ = await boot(tmp_path, [d0, d1], breaker_cooldown_s=60)
    await until(lambda: kernel.scheduler.breakers["mock0"].state == OPEN)
    await until(lambda: kernel.scheduler.breakers["mock1"].healthy is True)
    async with api(kernel) as c:
        devices = {d["name"]: d for d in (await c.get("/v1/sys/devices")).json()["data"]}
        assert devices["mock0"]["breaker"] == "open" and devices["mock0"]["healthy"] is False
        assert "health check" in devices["mock0"]["last_error"]
        assert devices["mock1"]["breaker"] == "closed" and devices["mock1"]["trips"] == 0
        text = (await c.get("/metrics")).text
    assert 'llmos:device_breaker_state{device="mock0"} 2.0' in text
    assert 'llmos:device_breaker_state{device="mock1"} 0.0' in text
    assert 'llmos:device_healthy{device="mock0"} 0.0' in text
    assert 'llmos:device_healthy{device="mock1"} 1.0' in text
    assert 'llmos:device_faults_total{device="mock0"} 0.0' in text
    await kernel.stop()


# -- the HTTP driver: a failing device, or a bad request? ----------------------------------
def _chunk(tid: int, text: str, finish: str | None = None) -> bytes:
    entry = {"id": tid, "token": text, "logprob": -0.1}
    choice = {"text": text, "logprobs": {"content": [entry]}, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def _engine(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAIHttpDevice:
    """An HTTP device in token mode whose server is `handler` (no network)."""
    transport = httpx.MockTransport(handler)
    dev = OpenAIHttpDevice("http://engine", name="http0", model="m", transport=transport)
    dev.token_ids = True
    return dev


async def _generate(dev: OpenAIHttpDevice) -> list[Token | Finished]:
    snapshot = Snapshot([1, 2, 3], SamplingParams(max_tokens=4, temperature=0.0))
    try:
        return [e async for e in dev.generate(snapshot)]
    finally:
        await dev.close()


def _error_body(status: int, type_: str, message: str) -> httpx.Response:
    body = {"error": {"code": status, "type": type_, "message": message}}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("response", "kind", "words"),
    [
        (_error_body(503, "unavailable_error", "Loading model"), DeviceError, "Loading model"),
        (httpx.Response(500, text="segfault"), DeviceError, "HTTP 500"),
        (httpx.Response(502, text="<html>bad gateway</html>"), DeviceError, "HTTP 502"),
        (
            _error_body(400, "exceed_context_size_error", "request exceeds the context size"),
            ContextOverflow,
            "context size",
        ),
        (_error_body(400, "odd_error", "no such sampler"), InvalidRequest, "no such sampler"),
        (httpx.Response(422, text="unprocessable"), InvalidRequest, "HTTP 422"),
        # A stream cut after two tokens, with neither a finish_reason nor [DONE]:
        (httpx.Response(200, content=_chunk(5, "a") + _chunk(6, "b")), DeviceError, "ended"),
    ],
)
async def test_http_errors_are_told_apart(
    response: httpx.Response, kind: type[LlmosError], words: str
) -> None:
    with pytest.raises(LlmosError) as err:
        await _generate(_engine(lambda request: response))
    assert type(err.value) is kind and words in err.value.message
    assert isinstance(err.value, DeviceError) == (kind is DeviceError)


async def test_an_unreachable_server_is_a_device_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(DeviceError, match="connection refused"):
        await _generate(_engine(refuse))


async def test_a_whole_stream_still_ends_normally() -> None:
    body = _chunk(5, "a") + _chunk(6, "b", finish="length") + b"data: [DONE]\n\n"
    events = await _generate(_engine(lambda request: httpx.Response(200, content=body)))
    assert [e.id for e in events if isinstance(e, Token)] == [5, 6]
    assert isinstance(events[-1], Finished) and events[-1].reason == "length"
