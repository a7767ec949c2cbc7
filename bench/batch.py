"""A batch beside interactive traffic: does the batch soak up the idle capacity without
hurting interactive latency? Three phases on one `llmos up` (the embedded model, or
`--device mock`), on 127.0.0.1, with the `priority` policy (`--policy`) so that an
interactive request (priority 20) may preempt a batch line (the jobs' priority 10):

1. interactive alone: K closed-loop clients (each its own process token) send short
   streamed chats with a think time between them, for `--duration` seconds; TTFT is
   the time to the first chunk that carries content;
2. the batch alone: N chat requests (greedy, `--max-tokens`, varied prompts) uploaded
   as one JSONL file and submitted with the `openai` package's Batch API; throughput
   is lines/s and completion tokens/s from submit to `completed`;
3. both: the same interactive clients, and the same batch submitted once they run;
   the clients stop when the batch ends, and only requests started while the batch
   was in progress count.

Definitions printed with the figures:
- interactive slot share = Σ interactive request seconds / (slots × phase-1 wall s),
  the mean fraction of the device's slots interactive traffic holds when alone;
- idle capacity = phase-2 lines/s × (1 − interactive slot share);
- batch_share_of_idle_capacity = phase-3 lines/s / idle capacity (goal ≥ 0.8);
- interactive_p95_ttft_ratio = phase-3 p95 TTFT / phase-1 p95 TTFT (goal ≤ 1.2).

    flock /tmp/llmos-model.lock .venv/bin/python bench/batch.py      # 1,000 lines
    .venv/bin/python bench/batch.py --quick --device mock             # smoke run

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _upproc import llmos_up

TOKEN = "bench-batch-admin-token"
QUICK = {"lines": 50, "duration": 20.0, "lead": 1.0}  # --quick's defaults
DONE = {"completed", "failed", "expired", "cancelled"}
TOPICS = (
    "rivers", "bread", "volcanoes", "chess", "owls", "glass", "tides", "maps", "bees",
    "copper", "clouds", "violins", "deserts", "bridges", "tea", "comets", "moss", "salt",
)  # fmt: skip
ASKS = (
    "Give one fact about {t}.",
    "Describe {t} in one sentence.",
    "Why do people like {t}?",
    "Name a color you link with {t}.",
    "Write a short title about {t} and the number {i}.",
)


@dataclass
class Interactive:
    """One phase's interactive requests: (start offset s, TTFT s, e2e s) per answer."""

    answers: list[tuple[float, float, float]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def prompt(i: int) -> str:
    return ASKS[i % len(ASKS)].format(t=TOPICS[(i // len(ASKS)) % len(TOPICS)], i=i)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


# -- interactive clients ---------------------------------------------------------------
async def _stream_one(
    http: httpx.AsyncClient, token: str, model: str, text: str, max_tokens: int
) -> tuple[float, float] | str:
    """One streamed chat: (TTFT, e2e) in seconds, or the error's kind."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    t0 = time.perf_counter()
    ttft = None
    try:
        auth = {"Authorization": f"Bearer {token}"}
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r:
            if r.status_code != 200:
                await r.aread()
                return str(r.status_code)
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return f"stream:{chunk['error'].get('code')}"
                delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
                if ttft is None and delta.get("content"):
                    ttft = time.perf_counter() - t0
    except httpx.HTTPError as exc:
        return type(exc).__name__
    e2e = time.perf_counter() - t0
    return (e2e if ttft is None else ttft), e2e


async def interactive(
    url: str, model: str, tokens: list[str], args: argparse.Namespace, stop: asyncio.Event
) -> Interactive:
    """K closed-loop clients until `stop` is set; the same prompts and think times
    (seeded per client) in every phase."""
    out = Interactive()
    origin = time.perf_counter()
    timeout = httpx.Timeout(120, connect=30)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:

        async def client(c: int, token: str) -> None:
            rnd = random.Random(c)
            while not stop.is_set():
                started = time.perf_counter() - origin
                text = f"{prompt(rnd.randrange(10_000))} Answer briefly."
                got = await _stream_one(http, token, model, text, args.max_tokens)
                if isinstance(got, str):
                    out.error(got)
                else:
                    out.answers.append((started, *got))
                think = rnd.uniform(0.5 * args.think, 1.5 * args.think)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), think)

        await asyncio.gather(*(client(c, t) for c, t in enumerate(tokens)))
    return out


def interactive_stats(
    run: Interactive, window: tuple[float, float], slots: int, wall: float
) -> dict[str, Any]:
    """TTFT figures of the requests started inside `window` (offsets, seconds)."""
    inside = [a for a in run.answers if window[0] <= a[0] <= window[1]]
    ttfts = [a[1] for a in inside]
    busy = sum(a[2] for a in run.answers)
    return {
        "requests": len(inside),
        "ttft_p50_s": None if not ttfts else round(pct(ttfts, 0.5) or 0, 4),
        "ttft_p95_s": None if not ttfts else round(pct(ttfts, 0.95) or 0, 4),
        "slot_share": round(busy / (slots * wall), 4) if wall > 0 else None,
        "errors": run.errors,
    }


# -- the batch ---------------------------------------------------------------------------
def batch_jsonl(n: int, model: str, max_tokens: int) -> bytes:
    lines = []
    for i in range(n):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt(i)}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
        lines.append(json.dumps({**line, "body": body}))
    return ("\n".join(lines) + "\n").encode()


async def run_batch(
    oa: AsyncOpenAI, file_id: str, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Submit the uploaded file, poll to the end, read the output and error files."""
    metadata = {"bench": "batch.py"}
    if args.batch_concurrent:  # llmos's resource request: slots the batch may hold
        metadata["llmos_max_concurrent"] = str(args.batch_concurrent)
    limit_s = args.batch_limit
    t0 = time.perf_counter()
    batch = await oa.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=metadata,
    )
    while batch.status not in DONE:
        if time.perf_counter() - t0 > limit_s:
            await oa.batches.cancel(batch.id)
            break
        await asyncio.sleep(0.5)
        batch = await oa.batches.retrieve(batch.id)
    wall = time.perf_counter() - t0
    ok = tokens = failed = 0
    ids: set[str] = set()
    if batch.output_file_id:
        text = (await oa.files.content(batch.output_file_id)).text
        for raw in filter(None, text.splitlines()):
            line = json.loads(raw)
            ids.add(line["custom_id"])
            resp = line.get("response") or {}
            if resp.get("status_code") == 200:
                ok += 1
                tokens += int((resp.get("body") or {}).get("usage", {}).get("completion_tokens", 0))
            else:
                failed += 1
    if batch.error_file_id:
        text = (await oa.files.content(batch.error_file_id)).text
        failed += sum(1 for raw in text.splitlines() if raw.strip())
    counts = batch.request_counts
    return {
        "id": batch.id,
        "status": batch.status,
        "lines": n,
        "completed": ok,
        "failed": failed,
        "missing": n - ok - failed,
        "distinct_ids": len(ids),
        "request_counts": None if counts is None else counts.model_dump(),
        "wall_s": round(wall, 2),
        "lines_per_s": round(ok / wall, 3) if wall > 0 else None,
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
        "completion_tokens": tokens,
    }


# -- the phases --------------------------------------------------------------------------
async def phases(url: str, args: argparse.Namespace) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=admin, timeout=60) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        tokens = []
        for c in range(args.clients):
            r = await http.post("/v1/processes", json={"name": f"interactive-{c}"})
            r.raise_for_status()
            tokens.append(r.json()["token"])
    oa = AsyncOpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=120)
    data = batch_jsonl(args.lines, model, args.max_tokens)

    print(f"phase 1: {args.clients} interactive clients alone for {args.duration:g} s", flush=True)
    stop = asyncio.Event()
    task = asyncio.create_task(interactive(url, model, tokens, args, stop))
    await asyncio.sleep(args.duration)
    stop.set()
    alone = await task
    wall1 = args.duration
    p1 = interactive_stats(alone, (0, wall1), args.slots, wall1)
    load = {"interactive_alone": os.getloadavg()[0]}  # the machine's, at each phase's end

    print(f"phase 2: a batch of {args.lines} lines alone", flush=True)
    f2 = await oa.files.create(file=("batch-alone.jsonl", data), purpose="batch")
    p2 = await run_batch(oa, f2.id, args.lines, args)
    load["batch_alone"] = os.getloadavg()[0]

    print("phase 3: the same batch beside the same interactive clients", flush=True)
    f3 = await oa.files.create(file=("batch-mixed.jsonl", data), purpose="batch")
    stop = asyncio.Event()
    origin = time.perf_counter()
    task = asyncio.create_task(interactive(url, model, tokens, args, stop))
    await asyncio.sleep(args.lead)  # the clients are running before the batch arrives
    start = time.perf_counter() - origin
    p3 = await run_batch(oa, f3.id, args.lines, args)
    end = time.perf_counter() - origin
    stop.set()
    mixed = await task
    p3i = interactive_stats(mixed, (start, end), args.slots, end - start)
    load["mixed"] = os.getloadavg()[0]
    await oa.close()

    share = p1["slot_share"] or 0.0
    idle = None if p2["lines_per_s"] is None else p2["lines_per_s"] * (1 - share)
    return {
        "model": model,
        "device": args.device,
        "slots": args.slots,
        "policy": args.policy,
        "clients": args.clients,
        "think_s": args.think,
        "max_tokens": args.max_tokens,
        "batch_concurrent": args.batch_concurrent or "kernel default (all slots)",
        "interactive_alone": p1,
        "batch_alone": p2,
        "batch_mixed": p3,
        "interactive_mixed": p3i,
        "idle_capacity_lines_per_s": None if idle is None else round(idle, 3),
        "interactive_p95_ttft_ratio": ratio(p3i["ttft_p95_s"], p1["ttft_p95_s"]),
        "interactive_p50_ttft_ratio": ratio(p3i["ttft_p50_s"], p1["ttft_p50_s"]),
        "batch_share_of_idle_capacity": ratio(p3["lines_per_s"], idle),
        "batch_mixed_vs_alone": ratio(p3["lines_per_s"], p2["lines_per_s"]),
        "loadavg_1m": {k: round(v, 2) for k, v in load.items()},
    }


def _interactive_line(name: str, i: dict[str, Any]) -> str:
    return (
        f"{name}: {i['requests']} requests, TTFT p50 {i['ttft_p50_s']} s, "
        f"p95 {i['ttft_p95_s']} s, errors {i['errors'] or 'none'}"
    )


def _batch_line(name: str, b: dict[str, Any]) -> str:
    return (
        f"{name}: {b['completed']}/{b['lines']} lines in {b['wall_s']} s = "
        f"{b['lines_per_s']} lines/s, {b['tokens_per_s']} tok/s, failed {b['failed']}, "
        f"missing {b['missing']}, status {b['status']}"
    )


def summary(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"model {r['model']} on {r['device']}, {r['slots']} slots, policy {r['policy']}, "
            f"batch concurrency {r['batch_concurrent']}; {r['clients']} interactive "
            f"clients (think {r['think_s']:g} s), max_tokens {r['max_tokens']}",
            _interactive_line("interactive alone", r["interactive_alone"])
            + f", slot share {r['interactive_alone']['slot_share']}",
            _batch_line("batch alone", r["batch_alone"]),
            _batch_line("batch beside interactive", r["batch_mixed"]),
            _interactive_line("interactive beside the batch", r["interactive_mixed"]),
            f"idle capacity = batch-alone lines/s x (1 - interactive slot share) = "
            f"{r['idle_capacity_lines_per_s']} lines/s",
            f"interactive p95 TTFT ratio (beside / alone): {r['interactive_p95_ttft_ratio']} "
            f"(goal <= 1.2); p50 ratio {r['interactive_p50_ttft_ratio']}",
            f"batch share of idle capacity: {r['batch_share_of_idle_capacity']} (goal >= 0.8); "
            f"batch beside / alone: {r['batch_mixed_vs_alone']}",
            f"machine load (1 min) at each phase's end: {r['loadavg_1m']}",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="50 lines, 20 s of interactive alone")
    ap.add_argument("--device", choices=("llamacpp", "mock"), default="llamacpp")
    ap.add_argument("--lines", type=int, default=1000, help="batch size")
    ap.add_argument("--clients", type=int, default=2, help="interactive clients (K)")
    ap.add_argument("--think", type=float, default=1.0, help="mean think time, s")
    ap.add_argument("--duration", type=float, default=60.0, help="phase 1, s")
    ap.add_argument("--lead", type=float, default=3.0, help="phase 3: clients run this long first")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument(
        "--policy", default="priority", help="the kernel's; priority lets interactive preempt"
    )
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-concurrent", type=int, help="metadata llmos_max_concurrent")
    ap.add_argument("--batch-limit", type=float, default=900.0, help="s per batch, then cancel")
    args = ap.parse_args()
    if args.quick:  # smaller defaults; what the command line names stays
        for name, value in QUICK.items():
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, value)
    flags = ["--slots", str(args.slots), "--ctx", str(args.ctx), "--threads", str(args.threads)]
    flags += ["--device", args.device, "--policy", args.policy]
    with (
        tempfile.TemporaryDirectory(prefix="llmos-bench-batch-") as tmp,
        llmos_up(Path(tmp), flags, TOKEN, "llmos.log") as (url, _pid),
    ):
        try:
            result = asyncio.run(phases(url, args))
        except Exception:  # what the kernel said about it, before the home goes
            tail = (Path(tmp) / "llmos.log").read_text(errors="replace").splitlines()[-40:]
            print("--- kernel log (last lines) ---", *tail, sep="\n", file=sys.stderr)
            raise
    b2, b3 = result["batch_alone"], result["batch_mixed"]
    errors = {**result["interactive_alone"]["errors"], **result["interactive_mixed"]["errors"]}
    result["failures"] = {
        "batch_failed": b2["failed"] + b3["failed"],
        "batch_missing": b2["missing"] + b3["missing"],
        "interactive_errors": sum(errors.values()),
    }
    result["ok"] = b2["status"] == b3["status"] == "completed" and not any(
        result["failures"].values()
    )
    print(summary(result))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
