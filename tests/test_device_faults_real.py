"""Real llama.cpp HTTP servers on 127.0.0.1, SIGKILLed mid-generation: the request goes
back on the run queue with its snapshot and completes on the other server, or on the
same one once it is restarted, with the output of an uninterrupted greedy run."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from llmos.api import create_app
from llmos.devices import OpenAIHttpDevice, default_model_path
from llmos.kernel import Done, Kernel, ReqState, Request
from llmos.kernel.breaker import BreakerState
from llmos.params import Settings
from tests._live_server import serving
from tests._llama_server import _SCRIPT, _stop, _tail, free_port
from tests.conftest import MODEL

pytestmark = pytest.mark.model

ADMIN = "adm"
TOKENS = 96  # long enough to be killed in the middle, short enough for 2 cores
KILL_AFTER = 16  # tokens streamed before the kill
STORY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
    "max_tokens": TOKENS,
    "temperature": 0,
    "seed": 1,
    "ignore_eos": True,  # exactly TOKENS tokens, so the kill lands mid-generation
}
FAULTS: dict[str, Any] = {
    "health_interval_s": 0.5,
    "breaker_cooldown_s": 0.3,
    "device_wait_s": 120.0,
}


class KillableServer:
    """A llama.cpp server subprocess (tests/_llama_server.py's script) on a fixed port,
    which the test can SIGKILL and start again on the same port."""

    def __init__(self, slots: int = 1, ctx: int = 512) -> None:
        self.cfg = {
            "model": str(default_model_path()),
            "slots": slots,
            "ctx": ctx,
            "threads": 1,
            "port": free_port(),
            "host": "127.0.0.1",
            "api_key": None,
            "metrics": False,
        }
        self.url = f"http://127.0.0.1:{self.cfg['port']}"
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.stop()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, json.dumps(self.cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready or not self.proc.stdout.readline().strip():
            raise RuntimeError(f"llama server did not start: {_tail(self._log, self.proc)}")
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"llama server exited: {_tail(self._log, self.proc)}")
                with suppress(httpx.HTTPError):
                    if client.get(self.url + "/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama server at {self.url} not healthy in {timeout}s")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no goodbye on the open connections."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def servers(n: int) -> Iterator[list[KillableServer]]:
    with ExitStack() as stack:
        out = []
        for _ in range(n):
            server = KillableServer()
            stack.callback(server.stop)
            server.start()
            out.append(server)
        yield out


def device(server: KillableServer, name: str) -> OpenAIHttpDevice:
    return OpenAIHttpDevice(server.url, name=name, model=MODEL)


def sse_text(lines: list[str]) -> tuple[str, list[dict[str, Any]]]:
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, chunks


def test_killed_server_hands_the_stream_to_the_other(tmp_path: Path) -> None:
    """Two servers, one slot each, behind two HTTP devices serving the same model. A
    streamed greedy generation runs on the first; it is SIGKILLed after 16 tokens; the
    stream goes on from the second server and ends as an uninterrupted run does."""
    with servers(2) as (a, b):
        settings = Settings(home=tmp_path, admin_token=ADMIN, **FAULTS)
        kernel = Kernel(settings, [device(a, "http-a"), device(b, "http-b")])
        by_name = {"http-a": a, "http-b": b}
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with serving(create_app(kernel)) as url, httpx.Client(headers=headers, timeout=120) as c:
            plain = c.post(url + "/v1/chat/completions", json=STORY).json()
            expected = plain["choices"][0]["message"]["content"]
            assert plain["usage"]["completion_tokens"] == TOKENS
            lines: list[str] = []
            killed = None
            body = {**STORY, "stream": True}
            with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if not line:
                        continue
                    lines.append(line)
                    if killed is None and sum(x.startswith("data: {") for x in lines) > KILL_AFTER:
                        (killed,) = [n for n, reqs in kernel.scheduler.running.items() if reqs]
                        by_name[killed].kill()
            text, chunks = sse_text(lines)
            assert lines[-1] == "data: [DONE]"
            assert not any("error" in ch for ch in chunks), chunks[-1]
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
            assert text == expected  # token-exact across the kill
            devices = {d["name"]: d for d in c.get(url + "/v1/sys/devices").json()["data"]}
        survivor = "http-b" if killed == "http-a" else "http-a"
        assert devices[killed]["faults"] == 1
        assert devices[killed]["breaker"] in ("open", "half_open")
        assert devices[survivor]["breaker"] == "closed" and devices[survivor]["faults"] == 0
        assert devices[survivor]["dispatched"] == 1  # the resumed half ran there


async def _run(kernel: Kernel) -> Request:
    req: Request = await kernel.call("llm.chat", kernel.authenticate(ADMIN), dict(STORY))
    return req


async def _done(req: Request, timeout: float = 180.0) -> Done:
    async def drain() -> Done:
        while True:
            event = await req.events.get()
            if isinstance(event, Done):
                return event

    return await asyncio.wait_for(drain(), timeout)


async def test_request_resumes_when_the_killed_server_returns(tmp_path: Path) -> None:
    """One server, killed mid-generation and started again on the same port: the
    request waits on the run queue, resumes when a health check finds the server back,
    and completes with the uninterrupted output."""
    with servers(1) as (a,):
        settings = Settings(home=tmp_path, admin_token=ADMIN, **FAULTS)
        kernel = Kernel(settings, [device(a, "http-a")])
        await kernel.start()
        try:
            plain = await _run(kernel)
            assert (await _done(plain)).error is None and plain.output_tokens == TOKENS
            req = await _run(kernel)
            deadline = time.monotonic() + 120
            while len(req.snapshot.generated_ids) < KILL_AFTER:
                assert not req.state.finished and time.monotonic() < deadline
                await asyncio.sleep(0.01)
            a.kill()
            breaker = kernel.scheduler.breakers["http-a"]
            while breaker.state != BreakerState.OPEN:
                await asyncio.sleep(0.01)
            assert req.state == ReqState.PREEMPTED and req.faults == 1
            await asyncio.to_thread(a.start)  # the same port again
            end = await _done(req)
            assert end.error is None and req.state == ReqState.FINISHED_LENGTH
            assert req.snapshot.generated_ids == plain.snapshot.generated_ids
            assert req.text == plain.text
            assert req.dispatches == 2 and breaker.state == BreakerState.CLOSED
            assert breaker.trips >= 1
        finally:
            await kernel.stop()
