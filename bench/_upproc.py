"""`llmos up` in a subprocess on 127.0.0.1 for the benchmarks that drive a kernel
over HTTP (load.py, shell_eval.py): started, waited on until healthy, always stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llmos_up(home: Path, flags: list[str], token: str, log_name: str) -> Iterator[tuple[str, int]]:
    """`llmos up --home HOME FLAGS…` with LLMOS_TOKEN=`token`, its output in
    HOME/`log_name`; yields (url, pid) once /healthz answers (180 s at most)."""
    port = free_port()
    cmd = [sys.executable, "-c", "from llmos.cli.main import main; main()", "up"]
    cmd += ["--port", str(port), "--home", str(home), *flags]
    env = {**os.environ, "LLMOS_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    log = (home / log_name).open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llmos up exited ({proc.returncode}); see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llmos up not healthy after 180 s; see {log.name}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
