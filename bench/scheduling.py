"""Scheduling policies compared in one run, on the real embedded model.

A mixed open-loop workload — interactive requests (short prompts, ~16 tokens,
Poisson arrivals, three owners, priority 30) and batch requests (long outputs,
priority 5, a fourth owner) — is replayed under every policy on one kernel (the
policy is switched at run time; prompts differ per run so no run feeds another's
prefix cache). Output lengths are forced with llama.cpp's `ignore_eos`. Per policy
and as a ratio to fifo: interactive TTFT p50/p95, mean and p95 job completion time,
throughput, Jain's index across owners, preemptions, prefix-cache reuse on resume.
`sjf-oracle` is SJF told the true lengths: the upper bound for any predictor.

    python bench/scheduling.py                  # the full run (several minutes)
    python bench/scheduling.py --quick          # about a minute
    python bench/scheduling.py --trace t.jsonl --time-scale 0.01 --length-scale 0.05
    python bench/scheduling.py --sim            # + 1,000 processes, 10,000 requests on a
                                                #   simulated device: decision time per dispatch

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import Job, Outcome, load_trace, mixed, summarize
from llmos.devices import Device, LlamaCppDevice, MockDevice, default_model_path
from llmos.kernel import Caller, Done, Kernel, Request
from llmos.params import Settings

POLICIES = ["fifo", "rr", "priority", "mlfq", "fair", "sjf", "sjf-oracle"]
MODEL = "SmolLM2-135M-Instruct"
ADMIN = "bench-admin"


class Oracle:
    """Knows each request's true output length (ignore_eos makes it max_tokens)."""

    def predict(self, req: Request) -> float:
        return float(req.snapshot.params.max_tokens)


async def _wait(req: Request) -> None:
    while not isinstance(await req.events.get(), Done):
        pass


async def _callers(kernel: Kernel, jobs: list[Job]) -> dict[tuple[str, str, int], Caller]:
    """One process per (owner, session, priority), owned by that owner."""
    users: dict[str, Caller] = {}
    procs: dict[tuple[str, str, int], Caller] = {}
    for j in jobs:
        key = (j.owner, j.session, j.priority)
        if key in procs:
            continue
        if j.owner not in users:
            users[j.owner] = kernel.authenticate(kernel.tokens.issue(j.owner, "user")[0])
        p = await kernel.call(
            "proc.spawn", users[j.owner], {"name": f"{j.owner}/{j.session}", "priority": j.priority}
        )
        procs[key] = kernel.authenticate(p["token"])
    return procs


async def _prompt(kernel: Kernel, dev: Device, job: Job, tag: str) -> list[int] | str:
    if job.prompt is not None:
        return job.prompt
    head = await dev.tokenize(f"[{tag}] Write about topic {tag}:")
    filler = await dev.tokenize(" the quick brown fox jumps over the lazy dog")
    body = (filler * (job.prompt_tokens // max(1, len(filler)) + 1))[: job.prompt_tokens]
    return (head + body)[: max(job.prompt_tokens, len(head))]


async def replay(kernel: Kernel, jobs: list[Job], policy: str, run: int) -> dict[str, Any]:
    name, changes = policy, {}
    if policy == "sjf-oracle":
        name, changes = "sjf", {"predictor": Oracle()}
    elif policy == "sjf":
        changes = {"predictor": kernel.predictor}
    kernel.set_policy(name, changes)
    dev = kernel.devices[0]
    stats = kernel.scheduler.stats
    before = (stats.preemptions, stats.resume_tokens, stats.resume_cached)
    decisions0, ns0 = kernel.scheduler.decisions, kernel.scheduler.decision_ns
    callers = await _callers(kernel, jobs)
    prompts = [await _prompt(kernel, dev, j, f"{run}.{i}") for i, j in enumerate(jobs)]
    reqs: list[Request] = []
    t0 = time.monotonic()
    for job, prompt in zip(jobs, prompts, strict=True):
        delay = t0 + job.arrival_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        args = {
            "model": dev.model,
            "prompt": prompt,
            "max_tokens": job.output_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        reqs.append(
            await kernel.call("llm.complete", callers[(job.owner, job.session, job.priority)], args)
        )
    await asyncio.gather(*(_wait(r) for r in reqs))
    wall = max(r.finished_at or 0 for r in reqs) - t0
    outcomes = [
        Outcome(
            job,
            (r.first_token_at or r.finished_at or 0) - r.created_at,
            (r.finished_at or 0) - r.created_at,
            r.output_tokens,
            r.finished_at or 0,
        )
        for job, r in zip(jobs, reqs, strict=True)
    ]
    m: dict[str, Any] = summarize(outcomes, wall)
    m["preemptions"] = stats.preemptions - before[0]
    resumed = stats.resume_tokens - before[1]
    m["resume_cache_hit"] = (stats.resume_cached - before[2]) / resumed if resumed else None
    d = kernel.scheduler.decisions - decisions0
    m["decision_us"] = (kernel.scheduler.decision_ns - ns0) / d / 1000 if d else None
    return m


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def report(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    base = results["fifo"]
    cols = ("ttft_p50", "ttft_p95", "jct_mean", "jct_p95", "throughput", "jain")
    print(f"{'policy':11s} " + " ".join(f"{c:>10s}" for c in cols) + "   preempt  cache  dec_us")
    out: dict[str, dict[str, Any]] = {}
    for name, m in results.items():
        cells = " ".join(f"{m[c]:10.3f}" for c in cols)
        hit = "-" if m["resume_cache_hit"] is None else f"{m['resume_cache_hit']:.2f}"
        dec = "-" if m["decision_us"] is None else f"{m['decision_us']:.1f}"
        print(f"{name:11s} {cells}   {m['preemptions']:7d}  {hit:>5s}  {dec:>6s}")
        out[name] = {
            "ttft_p50_ratio": _ratio(m["ttft_p50"], base["ttft_p50"]),
            "ttft_p95_ratio": _ratio(m["ttft_p95"], base["ttft_p95"]),
            "jct_mean_ratio": _ratio(m["jct_mean"], base["jct_mean"]),
            "jct_p95_ratio": _ratio(m["jct_p95"], base["jct_p95"]),
            "throughput_ratio": _ratio(m["throughput"], base["throughput"]),
            "jain": round(m["jain"], 3),
            "preemptions": m["preemptions"],
            "resume_cache_hit": None
            if m["resume_cache_hit"] is None
            else round(m["resume_cache_hit"], 3),
        }
    print("ratios to fifo:")
    for name, r in out.items():
        print(
            f"  {name:11s} ttft_p95 {r['ttft_p95_ratio']}  jct_mean {r['jct_mean_ratio']}  "
            f"throughput {r['throughput_ratio']}  jain {r['jain']}"
        )
    return out


async def real_runs(args: argparse.Namespace, jobs: list[Job]) -> tuple[dict[str, Any], float]:
    home = Path(tempfile.mkdtemp(prefix="llmos-sched-"))
    device = LlamaCppDevice(
        default_model_path(), slots=args.slots, ctx=args.ctx, threads=args.threads, model=MODEL
    )
    settings = Settings(
        home=home, admin_token=ADMIN, slots=args.slots, ctx=args.ctx, quantum=args.quantum
    )
    kernel = Kernel(settings, [device])
    await kernel.start()
    results: dict[str, dict[str, Any]] = {}
    try:
        for run, policy in enumerate(args.policies):
            t = time.monotonic()
            results[policy] = await replay(kernel, jobs, policy, run)
            print(f"# {policy}: {time.monotonic() - t:.1f} s", flush=True)
    finally:
        await kernel.stop()
    tok_time = args.slots / results["fifo"]["throughput"]  # seconds per token per slot
    return results, tok_time


async def sim_run(args: argparse.Namespace, tok_time: float) -> dict[str, float]:
    """1,000 processes, 10,000 requests queued at once on a simulated device whose
    per-token time is the real one's, sped up `--sim-speedup` times."""
    out: dict[str, float] = {}
    n_req = 2000 if args.quick else 10_000
    for policy in [p for p in args.policies if p != "sjf-oracle"]:
        home = Path(tempfile.mkdtemp(prefix="llmos-sim-"))
        device = MockDevice(
            slots=args.slots * 4, token_delay=tok_time / args.sim_speedup, context_length=4096
        )
        settings = Settings(
            home=home,
            admin_token=ADMIN,
            policy=policy,
            quantum=args.quantum,
            max_queue=n_req + 10,
            max_queue_per_owner=n_req + 10,
        )
        kernel = Kernel(settings, [device])
        await kernel.start()
        jobs = [
            Job(0.0, f"owner{p % 100}", 8, 1 + (p * 7 + r * 13) % 24, 5 + p % 30, str(p))
            for p in range(1000)
            for r in range(n_req // 1000)
        ]
        callers = await _callers(kernel, jobs)
        reqs = []
        for i, j in enumerate(jobs):
            args_ = {
                "model": "mock",
                "prompt": [97 + (i % 26)] * j.prompt_tokens,
                "max_tokens": j.output_tokens,
            }
            reqs.append(
                await kernel.call("llm.complete", callers[(j.owner, j.session, j.priority)], args_)
            )
        await asyncio.gather(*(_wait(r) for r in reqs))
        s = kernel.scheduler
        out[policy] = s.decision_ns / s.decisions / 1000 if s.decisions else math.nan
        print(
            f"# sim {policy}: {len(reqs)} requests, {s.decisions} decisions, "
            f"{out[policy]:.1f} us each",
            flush=True,
        )
        await kernel.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument(
        "--trace", type=Path, help="JSONL: arrival_s, owner, prompt_tokens, output_tokens"
    )
    ap.add_argument("--time-scale", type=float, default=1.0, help="multiply trace arrival times")
    ap.add_argument("--length-scale", type=float, default=1.0, help="multiply trace token counts")
    ap.add_argument("--limit", type=int, help="replay only the first N trace requests")
    ap.add_argument("--sim", action="store_true", help="also run the 10,000-request simulation")
    ap.add_argument("--sim-speedup", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=30.0, help="interactive arrivals window, s")
    ap.add_argument("--rate", type=float, default=1.5, help="interactive requests per second")
    ap.add_argument("--batch", type=int, default=6, help="batch jobs")
    ap.add_argument("--batch-tokens", type=int, default=256)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantum", type=int, default=16)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    args.policies = [p for p in args.policies.split(",") if p]
    if "fifo" not in args.policies:
        args.policies.insert(0, "fifo")
    if args.quick:
        args.duration, args.batch, args.batch_tokens = 6.0, 4, 96
    if args.trace:
        jobs = load_trace(args.trace, args.time_scale, args.length_scale, args.limit)
    else:
        jobs = mixed(args.duration, args.rate, args.batch, args.batch_tokens, args.seed)
    print(
        f"# {len(jobs)} jobs, {sum(j.output_tokens for j in jobs)} output tokens, "
        f"policies: {', '.join(args.policies)}",
        flush=True,
    )
    results, tok_time = asyncio.run(real_runs(args, jobs))
    ratios = report(results)
    decision = max((m["decision_us"] or 0.0) for m in results.values())
    result: dict[str, Any] = {"policies": ratios, "decision_us": round(decision, 1)}
    if args.sim:
        sim = asyncio.run(sim_run(args, tok_time))
        result["sim_decision_us"] = {k: round(v, 1) for k, v in sim.items()}
        result["decision_us"] = round(max(sim.values()), 1)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
