"""bench/batch.py's quick mode end to end on the mock device: three phases through
`llmos up` and the openai package's Batch API, ending with a parseable RESULT line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "batch.py"


def test_quick_run_on_the_mock_device_prints_a_complete_result() -> None:
    cmd = [sys.executable, str(BENCH), "--quick", "--device", "mock", "--duration", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), done.stdout[-2000:]
    r = json.loads(last.removeprefix("RESULT "))
    for key in (
        "interactive_p95_ttft_ratio",
        "interactive_p50_ttft_ratio",
        "loadavg_1m",
        "batch_share_of_idle_capacity",
        "batch_mixed_vs_alone",
        "idle_capacity_lines_per_s",
        "failures",
        "ok",
    ):
        assert key in r
    for phase in ("batch_alone", "batch_mixed"):
        b = r[phase]
        assert b["status"] == "completed"
        assert b["lines"] == 50
        # every line answered exactly once: no failure, nothing lost or duplicated
        assert (b["completed"], b["failed"], b["missing"], b["distinct_ids"]) == (50, 0, 0, 50)
        assert b["completion_tokens"] > 0
    assert r["interactive_alone"]["requests"] > 0
    assert r["interactive_alone"]["ttft_p95_s"] is not None
    assert r["failures"] == {"batch_failed": 0, "batch_missing": 0, "interactive_errors": 0}
    assert r["ok"] is True
    assert "idle capacity =" in done.stdout
