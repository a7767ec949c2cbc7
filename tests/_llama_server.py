"""A real llama.cpp HTTP server in a subprocess, for tests of the HTTP device.

The subprocess loads a GGUF through xllamacpp, prints the engine's loopback listening
address on stdout and sleeps until killed. `llama_server()` waits for /health to answer
200, yields the base URL and always terminates and reaps the subprocess.

    with llama_server(default_model_path(), slots=2, ctx=512) as url:
        ...  # url == "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import xllamacpp

    cfg = json.loads(sys.argv[1])
    p = xllamacpp.CommonParams()
    p.model.path = cfg["model"]
    p.n_parallel = cfg["slots"]
    p.n_ctx = cfg["slots"] * cfg["ctx"]
    p.cpuparams.n_threads = cfg["threads"]
    p.cpuparams_batch.n_threads = cfg["threads"]
    p.cache_prompt = True
    p.endpoint_metrics = cfg["metrics"]
    p.verbosity = -1
    p.port = cfg["port"]
    p.hostnames = [cfg["host"]]
    if cfg["api_key"]:
        p.api_keys = [cfg["api_key"]]
    server = xllamacpp.Server(p)
    print(server.listening_address, flush=True)
    while True:
        time.sleep(3600)
    """
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(log: IO[bytes], proc: subprocess.Popen[str]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()[-15:]
    return f"exit code {proc.poll()}; stderr tail:\n" + "\n".join(lines)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def llama_server(
    model: Path,
    *,
    slots: int = 2,
    ctx: int = 512,
    threads: int = 2,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    metrics: bool = True,
    timeout: float = 120.0,
) -> Iterator[str]:
    """Run a llama.cpp server on `host` at a free port; yield its base URL.

    With `api_key`, every route but /health wants `Authorization: Bearer <api_key>`;
    `metrics` turns on the Prometheus endpoint (/metrics)."""
    cfg = {
        "model": str(model),
        "slots": slots,
        "ctx": ctx,
        "threads": threads,
        "port": free_port(host),
        "host": host,
        "api_key": api_key,
        "metrics": metrics,
    }
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, json.dumps(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            ready, _, _ = select.select([proc.stdout], [], [], timeout)  # the model loads
            address = proc.stdout.readline().strip() if ready else ""
            if not address:
                raise RuntimeError(f"llama server did not start: {_tail(log, proc)}")
            url = address if address.startswith("http") else f"http://{address}"
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            with httpx.Client(headers=headers, timeout=5.0) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"llama server exited: {_tail(log, proc)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url + "/health").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"llama server at {url} not healthy after {timeout}s")
                    time.sleep(0.1)
            yield url
        finally:
            _stop(proc)
