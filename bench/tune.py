"""Auto-tuning, before and after: does `llmos tune` find better device settings?

`llmos up` in a subprocess on the real embedded SmolLM2, started from a deliberately
poor configuration (1 slot of 2,048 tokens, llama.cpp's default batch). A fixed
workload goes through llmos's HTTP API — 32 chat requests of exactly 64 tokens
(greedy, `ignore_eos`) from 8 concurrent clients — then `POST /v1/tune` runs the
calibration and hill-climb, then the same workload runs again. Prints the settings
before and after, the tuning's trials, aggregate throughput (completion tokens over
the workload's wall time) and per-request p50/p95 latency, with the ratios; the last
line is `RESULT {json}`.

    flock /tmp/llmos-model.lock python bench/tune.py            # the acceptance run
    flock /tmp/llmos-model.lock python bench/tune.py --slots 4  # from the default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _upproc import llmos_up

TOKEN = "bench-tune-admin-token"
MODEL = "SmolLM2-135M-Instruct"
TOPICS = (
    "a lighthouse keeper",
    "a city garden",
    "the first snow",
    "a lost umbrella",
    "a train at night",
    "an old bookshop",
    "a chess game",
    "a mountain lake",
)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


async def workload(url: str, requests: int, clients: int, tokens: int) -> dict[str, Any]:
    """`requests` chats of exactly `tokens` tokens from `clients` concurrent clients."""
    todo = list(range(requests))
    latencies: list[float] = []
    made = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal made
        while todo:
            i = todo.pop(0)
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Tell a story about {TOPICS[i % 8]}."}],
                "max_tokens": tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            t0 = time.monotonic()
            r = await http.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            latencies.append(time.monotonic() - t0)
            made += r.json()["usage"]["completion_tokens"]

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.monotonic() - t0
    return {
        "requests": len(latencies),
        "tokens": made,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(made / wall, 1),
        "p50_s": round(percentile(latencies, 50), 2),
        "p95_s": round(percentile(latencies, 95), 2),
    }


def show_tuning(d: dict[str, Any]) -> None:
    print(f"tuning: {len(d['trials'])} trials")
    print("  step slots  ctx  batch    tok/s    p95")
    for t in d["trials"]:
        c, m = t["config"], t["measure"]
        batch = c["batch"] or "dflt"
        print(
            f"  {t['step']:>4} {c['slots']:>5} {c['context_length']:>4} {batch:>6} "
            f"{m['tokens_per_s']:>8.1f} {m['p95_s']:>6.2f}"
        )
    print(f"  decision #{d['id']} kept={d['kept']}: {d['reason']}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="llmos-bench-tune-"))
    flags = ["--slots", str(args.slots), "--ctx", str(args.ctx), "--threads", str(args.threads)]
    with llmos_up(home, flags, TOKEN, "up.log") as (url, _pid):
        await workload(url, 2, 2, 8)  # warm-up (not counted)
        before = await workload(url, args.requests, args.clients, args.tokens)
        print("before:", before, flush=True)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=900) as http:
            r = await http.post("/v1/tune", json={"max_seconds": args.max_seconds})
            r.raise_for_status()
            decision = r.json()
        show_tuning(decision)
        after = await workload(url, args.requests, args.clients, args.tokens)
        print("after: ", after, flush=True)
    result = {
        "settings_before": decision["before"],
        "settings_after": decision["after"] if decision["kept"] else decision["before"],
        "kept": decision["kept"],
        "tuning_s": round(sum(t["seconds"] for t in decision["trials"]), 1),
        "trials": len(decision["trials"]),
        "before": before,
        "after": after,
        "throughput_ratio": round(after["tokens_per_s"] / before["tokens_per_s"], 2),
        "p95_ratio": round(after["p95_s"] / before["p95_s"], 2),
        "calibration_before": decision["measured_before"],
        "calibration_after": decision["measured_after"],
    }
    s0, s1 = result["settings_before"], result["settings_after"]
    print(f"settings: {s0} -> {s1}")
    print(
        f"throughput {before['tokens_per_s']} -> {after['tokens_per_s']} tok/s "
        f"(x{result['throughput_ratio']}); p95 {before['p95_s']} -> {after['p95_s']} s "
        f"(x{result['p95_ratio']})"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=1, help="starting slots (default 1)")
    parser.add_argument("--ctx", type=int, default=2048, help="starting context per slot")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="tuning budget")
    out = asyncio.run(main(parser.parse_args()))
    print("RESULT " + json.dumps(out))
