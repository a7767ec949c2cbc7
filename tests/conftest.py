"""Shared fixtures: a kernel on the mock device (fast, in-process ASGI) and a real
llmos server on the embedded SmolLM2 model (uvicorn on 127.0.0.1, one per session)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from llmos.api import create_app
from llmos.devices import Device, LlamaCppDevice, MockDevice, OpenAIHttpDevice, default_model_path
from llmos.kernel import Kernel
from llmos.params import Settings
from llmos.sdk import Client
from tests import _live_server as _live
from tests._llama_server import llama_server

ADMIN = "test-admin-token"
MODEL = "SmolLM2-135M-Instruct"


@dataclass
class MockKernel:
    kernel: Kernel
    device: MockDevice
    client: httpx.AsyncClient  # speaks to the app in-process, admin token set


@pytest_asyncio.fixture
async def mock(tmp_path: Path) -> AsyncIterator[MockKernel]:
    device = MockDevice(slots=2, context_length=256, token_delay=0.001)
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN, max_body_bytes=64 * 1024), [device])
    await kernel.start()
    app = create_app(kernel, manage_kernel=False)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=headers
    ) as client:
        yield MockKernel(kernel, device, client)
    await kernel.stop()


@dataclass
class LiveServer:
    url: str
    token: str
    kernel: Kernel
    device: Device
    direct_chat: Callable[[dict[str, Any]], dict[str, Any]]  # the engine, without llmos

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.contextmanager
def _device(kind: str) -> Iterator[tuple[Device, Callable[[dict[str, Any]], dict[str, Any]]]]:
    """The real SmolLM2 behind either driver: 4 slots of 1024 tokens, 2 threads."""
    if kind == "embedded":
        dev = LlamaCppDevice(default_model_path(), slots=4, ctx=1024, threads=2, model=MODEL)
        yield dev, lambda body: dict(dev.engine.handle_chat_completions(body))
        return
    with llama_server(default_model_path(), slots=4, ctx=1024) as url:

        def direct(body: dict[str, Any]) -> dict[str, Any]:
            return dict(httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json())

        yield OpenAIHttpDevice(url, model=MODEL), direct


@pytest.fixture(scope="session", params=["embedded", "http"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A real kernel over HTTP on the real model, through the embedded llama.cpp
    driver and through the OpenAI-compatible HTTP driver (a llama.cpp server)."""
    home = tmp_path_factory.mktemp("llmos-home")
    settings = Settings(home=home, admin_token=ADMIN, slots=4, ctx=1024, threads=2)
    with _device(request.param) as (device, direct):
        kernel = Kernel(settings, [device])
        with _live.serving(create_app(kernel)) as url:
            yield LiveServer(url, ADMIN, kernel, device, direct)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_live.LiveServer]:
    """A live llmos server on the mock device, one per test module (SDK/CLI tests)."""
    with _live.live_server(tmp_path_factory.mktemp("llmos-home")) as live:
        yield live


@pytest.fixture
def client(server: _live.LiveServer) -> Iterator[Client]:
    with Client(server.url, server.token) as c:
        yield c
