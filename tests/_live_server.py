"""A real llmos HTTP server on the mock device, in a background thread, for SDK and
CLI tests.

    with live_server(tmp_path) as server:
        ...  # server.url == "http://127.0.0.1:PORT", server.token == "test-admin"

The kernel and app are built inside the server's thread (its event loop owns them);
at exit the server is told to stop and the thread is joined, so the kernel's
lifespan shutdown (devices closed, database closed) has run before we return.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from llmos.api.app import create_app
from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.params import Settings
from tests._llama_server import free_port

ADMIN_TOKEN = "test-admin"
MODEL = "mock"  # MockDevice's model id


@dataclass
class LiveServer:
    url: str
    token: str
    kernel: Kernel


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


@contextlib.contextmanager
def serving(app: Any, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its URL.
    The app's lifespan starts and stops its kernel; the thread is always joined."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"llmos-test-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, thread, startup_timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), "the test server did not stop"


@contextlib.contextmanager
def live_server(
    home: Path, *, slots: int = 2, token_delay: float = 0.002, startup_timeout: float = 15.0
) -> Iterator[LiveServer]:
    kernel = Kernel(
        Settings(home=home, admin_token=ADMIN_TOKEN),
        [MockDevice(slots=slots, token_delay=token_delay)],
    )
    with serving(create_app(kernel), startup_timeout) as url:
        yield LiveServer(url=url, token=ADMIN_TOKEN, kernel=kernel)


def _wait_healthy(url: str, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("the test server exited during startup")
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"the test server at {url} did not become healthy in {timeout}s")
