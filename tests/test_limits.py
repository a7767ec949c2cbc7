"""Hardening limits: per-token rate limit (429 + Retry-After), request deadlines
(504; a stream ends with an error event and [DONE]), header size (431), and a
streaming client that stops reading (dropped; its generation is cancelled)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from click.testing import Result
from typer.testing import CliRunner

import llmos.api.server
from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.errors import Overloaded
from llmos.kernel import Kernel
from llmos.kernel.ratelimit import PRUNE_EVERY, RateLimiter
from llmos.kernel.tokens import Caller
from llmos.params import Settings
from tests._live_server import serving
from tests._llama_server import free_port

ADMIN = "limits-admin-token"
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "go"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def user(token_id: str = "t1") -> Caller:
    return Caller(token_id, "alice", "user")


# -- the token bucket ----------------------------------------------------------------
def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    rl = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        rl.check(user())
    with pytest.raises(Overloaded) as err:
        rl.check(user())
    assert err.value.status == 429 and err.value.code == "rate_limit_exceeded"
    assert err.value.param == "authorization"
    assert err.value.retry_after == 1  # 0.5 s to the next unit, rounded up
    clock.now += 0.5  # one unit back
    rl.check(user())
    with pytest.raises(Overloaded):
        rl.check(user())
    clock.now += 60  # refills to the burst, no further
    for _ in range(3):
        rl.check(user())
    with pytest.raises(Overloaded):
        rl.check(user())
    assert rl.refused == 3


def test_retry_after_is_the_wait_for_one_unit() -> None:
    clock = Clock()
    rl = RateLimiter(rate=0.25, burst=1, clock=clock)
    rl.check(user())
    with pytest.raises(Overloaded) as err:
        rl.check(user())
    assert err.value.retry_after == 4
    clock.now += 3.5
    with pytest.raises(Overloaded) as err:
        rl.check(user())
    assert err.value.retry_after == 1


def test_buckets_are_per_token_admins_are_exempt_and_zero_is_off() -> None:
    rl = RateLimiter(rate=1.0, burst=1, clock=Clock())
    rl.check(user("a"))
    rl.check(user("b"))  # another token has its own bucket
    with pytest.raises(Overloaded):
        rl.check(user("a"))
    admin = Caller("adm", "admin", "admin")
    for _ in range(100):
        rl.check(admin)
    off = RateLimiter(rate=0, burst=1)
    for _ in range(100):
        off.check(user())
    assert not off.buckets


def test_refilled_buckets_are_pruned() -> None:
    clock = Clock()
    rl = RateLimiter(rate=10.0, burst=5, clock=clock)
    for i in range(PRUNE_EVERY - 1):
        rl.check(user(f"tok{i}"))
    assert len(rl.buckets) == PRUNE_EVERY - 1
    clock.now += 1  # every bucket is full again
    rl.check(user("last"))
    assert list(rl.buckets) == ["last"]


# -- over HTTP -----------------------------------------------------------------------
@pytest_asyncio.fixture
async def app_client(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An in-process app whose settings and mock device the test chooses (indirect)."""
    opts: dict[str, Any] = dict(getattr(request, "param", {}))
    device = MockDevice(
        slots=opts.pop("slots", 2),
        context_length=4096,
        token_delay=opts.pop("token_delay", 0.001),
    )
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN, **opts), [device])
    await kernel.start()
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=headers, timeout=30
    ) as client:
        client.kernel = kernel  # type: ignore[attr-defined]
        yield client
    await kernel.stop()


@pytest.mark.parametrize("app_client", [{"rate_limit": 1.0, "rate_burst": 2}], indirect=True)
async def test_rate_limit_is_429_with_retry_after(app_client: httpx.AsyncClient) -> None:
    proc = (await app_client.post("/v1/processes", json={"name": "agent"})).json()
    auth = {"Authorization": f"Bearer {proc['token']}"}
    for _ in range(2):
        assert (await app_client.get("/v1/models", headers=auth)).status_code == 200
    r = await app_client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "rate_limit_error",
        "rate_limit_exceeded",
        "authorization",
    )
    assert "1 requests a second" in err["message"]
    # Refused before any work: no request was queued for the agent.
    assert app_client.kernel.procs.get(proc["pid"]).requests == 0  # type: ignore[attr-defined]
    for _ in range(5):  # the admin who spawned it is not limited
        assert (await app_client.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    "app_client", [{"request_timeout_s": 0.3, "slots": 1, "token_delay": 0.01}], indirect=True
)
async def test_deadline_stops_a_long_request_with_504(app_client: httpx.AsyncClient) -> None:
    kernel: Kernel = app_client.kernel  # type: ignore[attr-defined]
    t0 = time.monotonic()
    r = await app_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2000})
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("timeout_error", "request_timeout")
    assert "0.3 s deadline" in err["message"] and "generated tokens" in err["message"]
    assert time.monotonic() - t0 < 10  # stopped, not run to its 20 s end
    assert kernel.scheduler.num_running() == 0
    assert kernel.deadlines.timers == {} and kernel.deadlines.expired == 1
    row = kernel.store.telemetry(limit=1)[0]
    assert row["finish_reason"] == "abort" and 0 < row["output_tokens"] < 2000
    # A short request is untouched by the deadline.
    r = await app_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert kernel.deadlines.timers == {}


@pytest.mark.parametrize(
    "app_client", [{"request_timeout_s": 0.3, "slots": 1, "token_delay": 0.01}], indirect=True
)
async def test_deadline_ends_a_stream_with_an_error_event(app_client: httpx.AsyncClient) -> None:
    body = {**CHAT, "max_tokens": 2000, "stream": True}
    async with app_client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])["error"]
    assert (err["type"], err["code"]) == ("timeout_error", "request_timeout")
    assert len(events) > 3  # some tokens came first


@pytest.mark.parametrize(
    "app_client", [{"request_timeout_s": 0.3, "slots": 1, "token_delay": 0.01}], indirect=True
)
async def test_deadline_bounds_the_wait_for_a_slot(app_client: httpx.AsyncClient) -> None:
    kernel: Kernel = app_client.kernel  # type: ignore[attr-defined]
    kernel.deadlines.timeout = 0  # the first request has no deadline: it keeps the slot
    first = asyncio.create_task(
        app_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2000})
    )
    while kernel.scheduler.num_running() == 0:
        await asyncio.sleep(0.01)
    kernel.deadlines.timeout = 0.3
    r = await app_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
    assert r.status_code == 504
    assert "while waiting for a slot" in r.json()["error"]["message"]
    assert kernel.scheduler.num_waiting() == 0 and kernel.scheduler.num_running() == 1
    for reqs in kernel.live.values():
        for req in list(reqs):
            kernel.cancel(req)
    assert (await first).status_code == 409


# -- on a live server: headers and slow readers ---------------------------------------
def _live(tmp_path: Path, **settings: Any) -> Any:
    device = MockDevice(slots=1, context_length=65536, token_delay=0.001)
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN, **settings), [device])
    return kernel, serving(create_app(kernel))


def test_oversize_headers_get_431(tmp_path: Path) -> None:
    _, server = _live(tmp_path, max_header_bytes=2048)
    with server as url, httpx.Client(base_url=url, timeout=10) as http:
        auth = {"Authorization": f"Bearer {ADMIN}"}
        assert http.get("/v1/models", headers={**auth, "X-Pad": "x" * 1500}).status_code == 200
        r = http.get("/v1/models", headers={**auth, "X-Pad": "x" * 2100})
        assert r.status_code == 431, r.text
        err = r.json()["error"]
        assert (err["param"], err["code"]) == ("headers", "headers_too_large")
        assert "limit is 2048" in err["message"]
        r = http.get("/v1/models?" + "q=" + "y" * 2100, headers=auth)  # the query counts
        assert r.status_code == 431
        assert http.get("/v1/models", headers=auth).status_code == 200  # still serving


def test_a_stalled_stream_reader_is_dropped_and_its_generation_cancelled(
    tmp_path: Path,
) -> None:
    kernel, server = _live(tmp_path, send_timeout_s=0.5)
    body = json.dumps({**CHAT, "max_tokens": 60000, "stream": True}).encode()
    with server as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            assert sock.recv(200).startswith(b"HTTP/1.1 200")  # a few bytes, then stall
            deadline = time.monotonic() + 30
            while not kernel.store.telemetry(limit=1) and time.monotonic() < deadline:
                time.sleep(0.05)
            row = kernel.store.telemetry(limit=1)[0]
            assert row["finish_reason"] == "abort"
            assert row["output_tokens"] < 60000  # cancelled long before its end (~60 s)
            assert kernel.scheduler.num_running() == 0
        with httpx.Client(timeout=10) as http:  # and the server still serves
            auth = {"Authorization": f"Bearer {ADMIN}"}
            r = http.post(
                url + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}, headers=auth
            )
            assert r.status_code == 200


# -- `llmos up` ------------------------------------------------------------------------
def _up(*args: str) -> tuple[Result, list[Settings]]:
    served: list[Settings] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llmos.api.server, "serve", served.append)
        result = CliRunner().invoke(build_app(), ["up", *args])
    return result, served


def test_up_takes_the_limits_and_the_mock_device(tmp_path: Path) -> None:
    args = ["--device", "mock", "--rate-limit", "5", "--rate-burst", "7"]
    result, served = _up("--home", str(tmp_path), *args, "--request-timeout", "12.5")
    assert result.exit_code == 0, result.output
    (s,) = served
    assert (s.mock_device, s.rate_limit, s.rate_burst, s.request_timeout_s) == (True, 5, 7, 12.5)
    result, served = _up("--home", str(tmp_path))
    (s,) = served
    assert not s.mock_device and s.rate_limit == 100 and s.request_timeout_s == 600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "error: unknown device 'tpu'; choose llamacpp or mock\n"),
        (["--rate-limit", "-1"], "error: rate_limit must be between 0 (off) and 1000000"),
        (["--rate-burst", "0"], "error: rate_burst must be between 1 and 1000000\n"),
        (["--request-timeout", "-3"], "error: request_timeout_s must be between 0 (none)"),
        (
            ["--device", "mock", "--device-url", "http://127.0.0.1:9/v1"],
            "error: the mock device takes no model path or URL\n",
        ),
    ],
)
def test_up_refuses_bad_limits(tmp_path: Path, args: list[str], message: str) -> None:
    result, served = _up("--home", str(tmp_path), *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.output and served == []


def test_up_serves_the_mock_device(tmp_path: Path) -> None:
    """The real command in a subprocess, as bench/load.py runs it; always stopped."""
    port = free_port()
    cmd = [sys.executable, "-c", "from llmos.cli.main import main; main()", "up"]
    cmd += ["--device", "mock", "--port", str(port), "--home", str(tmp_path), "--slots", "2"]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "LLMOS_TOKEN": ADMIN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {ADMIN}"}
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "llmos up exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "llmos up did not become healthy"
            time.sleep(0.1)
        models = httpx.get(url + "/v1/models", headers=auth, timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["mock"]
        body = {**CHAT, "max_tokens": 5}
        r = httpx.post(url + "/v1/chat/completions", json=body, headers=auth, timeout=10)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
