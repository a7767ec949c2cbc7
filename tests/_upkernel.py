"""`llmos up` as a subprocess on 127.0.0.1 for the crash tests (kill -9, restart on the
same LLMOS_HOME): waits for /healthz, always killed and reaped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests._llama_server import free_port

LLMOS = Path(sys.executable).with_name("llmos")


@contextlib.contextmanager
def up(
    home: Path, log: Path, token: str, *options: str, wait_s: float = 180
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """`llmos up --port P *options` with LLMOS_HOME=home and the admin `token`; yields
    the process and an httpx client with the token, once it answers /healthz."""
    port = free_port()
    env = {**os.environ, "LLMOS_HOME": str(home), "LLMOS_TOKEN": token}
    args = [str(LLMOS), "up", "--port", str(port), *options]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
            deadline = time.monotonic() + wait_s
            while True:
                assert proc.poll() is None, f"the kernel exited:\n{tail(log)}"
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        break
                assert time.monotonic() < deadline, f"the kernel never came up:\n{tail(log)}"
                time.sleep(0.05)
            yield proc, http
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
