"""Workloads for bench/scheduling.py: a built-in mixed open-loop workload, or a JSONL
trace, as a list of Jobs; and the metrics of one replay."""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Job:
    arrival_s: float
    owner: str
    prompt_tokens: int
    output_tokens: int
    priority: int = 20
    session: str = ""
    kind: str = "trace"  # "interactive" | "batch" | "trace"
    prompt: str | None = None


def mixed(
    duration_s: float, rate: float, batch_jobs: int, batch_tokens: int, seed: int
) -> list[Job]:
    """Interactive requests (short prompt, ~16 tokens, Poisson arrivals, three owners)
    and batch requests (long outputs) from a fourth owner, arriving early."""
    rng = random.Random(seed)
    jobs: list[Job] = []
    t = 0.0
    owners = ["alice", "bob", "carol"]
    while True:
        t += rng.expovariate(rate)
        if t > duration_s:
            break
        owner = rng.choice(owners)
        jobs.append(
            Job(t, owner, rng.randint(12, 28), rng.randint(12, 20), 30, owner, "interactive")
        )
    for i in range(batch_jobs):
        jobs.append(Job(0.2 * i, "batch", rng.randint(48, 80), batch_tokens, 5, "batch", "batch"))
    return sorted(jobs, key=lambda j: j.arrival_s)


def load_trace(path: Path, time_scale: float, length_scale: float, limit: int | None) -> list[Job]:
    jobs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row: dict[str, Any] = json.loads(line)
            jobs.append(
                Job(
                    arrival_s=float(row["arrival_s"]) * time_scale,
                    owner=str(row["owner"]),
                    prompt_tokens=max(1, round(int(row["prompt_tokens"]) * length_scale)),
                    output_tokens=max(1, round(int(row["output_tokens"]) * length_scale)),
                    priority=int(row.get("priority", 20)),
                    session=str(row.get("session", row["owner"])),
                    prompt=row.get("prompt"),
                )
            )
        except (KeyError, ValueError, TypeError) as e:
            raise SystemExit(
                f"{path}:{n}: bad trace line ({e}); need arrival_s, owner, "
                "prompt_tokens, output_tokens"
            ) from e
        if limit and len(jobs) >= limit:
            break
    return sorted(jobs, key=lambda j: j.arrival_s)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def jain(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0]
    return (sum(xs) ** 2) / (len(xs) * sum(x * x for x in xs)) if xs else math.nan


@dataclass
class Outcome:
    job: Job
    ttft_s: float
    jct_s: float
    tokens: int
    finish: float


def summarize(outcomes: list[Outcome], wall_s: float) -> dict[str, float]:
    inter = [o for o in outcomes if o.job.kind != "batch"]
    jct = [o.jct_s for o in outcomes]
    by_owner: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_owner.setdefault(o.job.owner, []).append(o)
    # Each owner's share: tokens served per second of its jobs' lives (a rate).
    rates = [sum(o.tokens for o in os) / sum(o.jct_s for o in os) for os in by_owner.values()]
    return {
        "ttft_p50": statistics.median(o.ttft_s for o in inter) if inter else math.nan,
        "ttft_p95": pct([o.ttft_s for o in inter], 0.95),
        "jct_mean": statistics.fmean(jct),
        "jct_p95": pct(jct, 0.95),
        "throughput": sum(o.tokens for o in outcomes) / wall_s,
        "jain": jain(rates),
    }
