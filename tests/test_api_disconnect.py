"""A client that hangs up never leaves a generation running."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests._live_server import live_server


@pytest.mark.parametrize("stream", [False, True])
def test_hang_up_cancels_the_generation(tmp_path: Path, stream: bool) -> None:
    with live_server(tmp_path, slots=1, token_delay=0.01) as srv:
        body = {
            "model": "mock",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 1000,  # ~10 s if nobody stopped it
            "stream": stream,
        }
        headers = {"Authorization": f"Bearer {srv.token}"}
        url = srv.url + "/v1/chat/completions"
        with httpx.Client(timeout=0.3) as c:
            if stream:  # read a few chunks, then hang up
                with c.stream("POST", url, json=body, headers=headers) as r:
                    lines = r.iter_lines()
                    assert [next(lines) for _ in range(3)]
            else:  # give up waiting for the whole answer
                with pytest.raises(httpx.ReadTimeout):
                    c.post(url, json=body, headers=headers)
        # The kernel runs on the server's thread: wait for its books, not just the slot.
        deadline = time.monotonic() + 5
        while not srv.kernel.store.telemetry(limit=1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.kernel.scheduler.num_running() == 0
        row = srv.kernel.store.telemetry(limit=1)[0]
        assert row["finish_reason"] == "abort" and row["output_tokens"] < 500
