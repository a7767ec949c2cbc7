"""bench/cluster.py's quick mode on the fixed-pace mock devices: a loopback Ray
cluster of two nodes, 1 and 2 replicas, and a parseable RESULT line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "cluster.py"

pytestmark = pytest.mark.cluster


def test_quick_run_prints_a_scaling_figure() -> None:
    cmd = [sys.executable, str(BENCH), "--quick", "--skip-real"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), done.stdout[-2000:]
    r = json.loads(last.removeprefix("RESULT "))
    run = r["scaling_run"]
    assert r["scaling"] == run["tokens_per_s_2"] / run["tokens_per_s_1"] > 0
    assert run["local_tokens_per_s"] > 0 and run["ray_vs_local"] > 0
    assert "placement" not in r  # --skip-real
