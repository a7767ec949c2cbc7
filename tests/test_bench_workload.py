"""The benchmark's workload and metrics helpers (bench/_workload.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _workload import Job, Outcome, jain, load_trace, mixed, summarize


def test_mixed_workload_has_both_classes_and_is_reproducible() -> None:
    jobs = mixed(20, 1.5, 4, 256, seed=7)
    assert jobs == mixed(20, 1.5, 4, 256, seed=7)
    kinds = {j.kind for j in jobs}
    assert kinds == {"interactive", "batch"}
    assert all(j.output_tokens == 256 for j in jobs if j.kind == "batch")
    assert all(j.output_tokens <= 20 for j in jobs if j.kind == "interactive")
    assert [j.arrival_s for j in jobs] == sorted(j.arrival_s for j in jobs)


def test_trace_loading_scales_and_rejects_bad_lines(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parent.parent / "bench" / "traces" / "sample.jsonl"
    jobs = load_trace(sample, time_scale=0.5, length_scale=0.1, limit=10)
    assert len(jobs) == 10 and all(j.output_tokens >= 1 for j in jobs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arrival_s": 1, "owner": "a", "prompt_tokens": 3}\n')
    with pytest.raises(SystemExit, match=r"bad\.jsonl:1"):
        load_trace(bad, 1.0, 1.0, None)


def test_jain_and_summary() -> None:
    assert jain([1, 1, 1, 1]) == pytest.approx(1.0)
    assert jain([1, 0.0001, 0.0001, 0.0001]) < 0.3
    a = Job(0, "a", 10, 10, kind="interactive")
    b = Job(0, "b", 10, 100, kind="batch")
    m = summarize([Outcome(a, 0.1, 1.0, 10, 1.0), Outcome(b, 0.2, 5.0, 100, 5.0)], wall_s=5.0)
    assert m["throughput"] == pytest.approx(22.0)
    assert m["ttft_p95"] == pytest.approx(0.1)  # interactive only
    assert m["jct_mean"] == pytest.approx(3.0)
