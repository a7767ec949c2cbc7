"""The learned predictor on telemetry from a real run: held-out MAE against the
naive baseline (the mean per app), for output tokens and slot time.

A kernel runs in-process on the real embedded SmolLM2 (8 slots, 2 threads). Four
apps — each a process named for it, per owner — send a mixed workload through a
pool of closed-loop clients (more clients than slots, so requests queue):
`summarize` (short summaries "in about N words" of texts of varying length,
max_tokens 24..56), `chat` (questions asking for answers of various lengths,
max_tokens 32..128), `classify` (one-word sentiment labels, max_tokens 4..16) and
`keywords` (a list of K keywords, max_tokens 16..64). Mostly greedy; about one
request in seven is sampled (temperature 0.8, fixed seed). Then the predictor is
trained through `learn.train` (80/20 chronological split, the newest 20% held
out) and the figures printed, with the heuristic (the session's last output) as
a second reference.

    flock /tmp/llmos-model.lock python bench/predictor.py     # 600 requests, ~3 minutes
    python bench/predictor.py --requests 120 --clients 8       # shorter
    python bench/predictor.py --home ~/.llmos                  # an existing kernel's telemetry

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.devices import LlamaCppDevice, default_model_path
from llmos.errors import LlmosError
from llmos.kernel import Caller, Kernel, learn
from llmos.kernel.features import History, replay
from llmos.params import Settings

MODEL = "SmolLM2-135M-Instruct"
ADMIN = "bench-admin"

SENTENCES = [
    "The city council approved a new budget for public transport after a long debate.",
    "Researchers found that bees can recognise human faces after short training.",
    "A storm closed the mountain pass for two days and stranded hundreds of drivers.",
    "The company reported higher profits thanks to strong sales of its new phone.",
    "Volunteers planted three thousand trees along the river to prevent erosion.",
    "The museum opened an exhibition of ancient maps drawn by sailors.",
    "Doctors recommend short walks after meals to keep blood sugar steady.",
    "The football team won the final with a goal in the last minute.",
    "A new library in the old train station attracts students every evening.",
    "Farmers expect a smaller harvest this year because of the dry spring.",
]
QUESTIONS = [
    "What is photosynthesis?",
    "How do airplanes stay in the air?",
    "Why is the sky blue?",
    "What are the benefits of regular exercise?",
    "How does a computer store information?",
    "What causes the seasons on Earth?",
    "How do vaccines work?",
    "What is the difference between weather and climate?",
]
REVIEWS = [
    "I loved this product, it works perfectly.",
    "Terrible quality, it broke after one day.",
    "Great value for the money, highly recommended.",
    "The delivery was late and the box was damaged.",
    "Absolutely wonderful experience, will buy again.",
    "Not worth it, very disappointing.",
]
OWNERS = {
    "summarize": ["alice", "bob"],
    "chat": ["alice", "carol"],
    "classify": ["bob", "carol"],
    "keywords": ["alice", "dave"],
}
MIX = ["summarize"] * 3 + ["chat"] * 3 + ["classify"] * 2 + ["keywords"] * 2


@dataclass(frozen=True)
class Job:
    app: str
    owner: str
    prompt: str
    max_tokens: int
    temperature: float
    seed: int | None


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(lo, hi)))


def workload(n: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        app = rng.choice(MIX)
        owner = rng.choice(OWNERS[app])
        if app == "summarize":
            words = rng.choice([5, 15, 30])
            prompt = f"Summarize in about {words} words:\n{_text(rng, 1, 8)}"
            cap = rng.choice([24, 40, 56])
        elif app == "chat":
            words = rng.choice([10, 40, 100])
            prompt = f"{rng.choice(QUESTIONS)} Answer in about {words} words."
            cap = rng.choice([32, 64, 128])
        elif app == "classify":
            prompt = (
                "Classify the sentiment of this review as positive or negative. "
                f"Answer with one word.\nReview: {rng.choice(REVIEWS)}"
            )
            cap = rng.choice([4, 8, 16])
        else:
            k = rng.choice([3, 5, 8])
            prompt = f"List {k} keywords of this text, separated by commas:\n{_text(rng, 1, 4)}"
            cap = rng.choice([16, 32, 64])
        sampled = rng.random() < 1 / 7
        jobs.append(Job(app, owner, prompt, cap, 0.8 if sampled else 0.0, i if sampled else None))
    return jobs


async def _callers(kernel: Kernel) -> dict[tuple[str, str], Caller]:
    """One process per (app, owner), named for the app, owned by the owner."""
    users: dict[str, Caller] = {}
    out: dict[tuple[str, str], Caller] = {}
    for app, owners in OWNERS.items():
        for owner in owners:
            if owner not in users:
                users[owner] = kernel.authenticate(kernel.tokens.issue(owner, "user")[0])
            proc = await kernel.call("proc.spawn", users[owner], {"name": app})
            out[(app, owner)] = kernel.authenticate(proc["token"])
    return out


async def run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="llmos-predictor-"))
    device = LlamaCppDevice(
        default_model_path(), slots=args.slots, ctx=args.ctx, threads=args.threads, model=MODEL
    )
    # The anomaly detector stays off: it would rightly see the chat app's long answers
    # as a latency outlier next to one-word labels and throttle it, skewing the mix.
    settings = Settings(home=home, admin_token=ADMIN, slots=args.slots, ctx=args.ctx, anomaly=False)
    kernel = Kernel(settings, [device])
    await kernel.start()
    try:
        admin = kernel.authenticate(ADMIN)
        callers = await _callers(kernel)
        jobs = workload(args.requests, args.seed)
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        done = 0
        failed: list[str] = []
        t0 = time.monotonic()

        async def client() -> None:
            nonlocal done
            while not queue.empty():
                job = queue.get_nowait()
                body: dict[str, Any] = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": job.prompt}],
                    "max_tokens": job.max_tokens,
                    "temperature": job.temperature,
                }
                if job.seed is not None:
                    body["seed"] = job.seed
                try:
                    req = await kernel.call("llm.chat", callers[(job.app, job.owner)], body)
                except LlmosError as exc:  # counted, not retried: the rows are what they are
                    failed.append(exc.message)
                    continue
                if (await req.outcome()).error is not None:
                    failed.append(str(req.error))
                done += 1
                if done % 50 == 0:
                    print(f"# {done} requests, {time.monotonic() - t0:.0f} s", flush=True)

        await asyncio.gather(*(client() for _ in range(args.clients)))
        print(f"# workload: {len(jobs)} requests in {time.monotonic() - t0:.1f} s", flush=True)
        if failed:
            print(f"# {len(failed)} failed, e.g. {failed[0]}", flush=True)
        stats = await kernel.call("learn.train", admin)
    finally:
        await kernel.stop()
    return home, stats


def heuristic_mae(samples: Any) -> dict[str, float]:
    """The model-free guess (session's last output, else app, owner) on the held-out
    part, for reference."""
    cut = learn.split(len(samples))
    h = History()
    guesses = [h.heuristic(f) for f in samples.x[cut:]]
    return {"output_tokens": learn.mae(guesses, samples.tokens[cut:])}


def report(stats: dict[str, Any]) -> None:
    print(f"model {stats['model']}, {stats['rows']} rows, newest {stats['holdout']:.0%} held out")
    print(f"{'target':14s} {'held out':>8s} {'MAE model':>10s} {'MAE mean/app':>12s} {'ratio':>6s}")
    for t in stats["targets"]:
        ratio = t["mae_model"] / t["mae_baseline"] if t["mae_baseline"] else float("nan")
        t["ratio"] = round(ratio, 3)
        print(
            f"{t['target']:14s} {t['heldout']:8d} {t['mae_model']:10.3f} "
            f"{t['mae_baseline']:12.3f} {ratio:6.3f}"
        )


def evaluate_home(home: Path) -> dict[str, Any]:
    """Train and evaluate on an existing LLMOS_HOME's telemetry (no model run)."""
    rows = learn.read_telemetry(home / "llmos.db", 10_000)
    samples, _ = replay(rows)
    trained = learn.train(samples)
    return {
        "model": trained.kind,
        "rows": trained.rows,
        "holdout": learn.HOLDOUT,
        "targets": [
            {
                "target": f.target,
                "heldout": f.heldout,
                "mae_model": round(f.mae_model, 4),
                "mae_baseline": round(f.mae_baseline, 4),
            }
            for f in trained.fits.values()
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=12, help="closed-loop clients at once")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512, help="tokens per slot")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--home", type=Path, help="evaluate this LLMOS_HOME's telemetry instead")
    args = ap.parse_args()
    t0 = time.monotonic()
    if args.home is not None:
        if not (args.home / "llmos.db").is_file():
            sys.exit(f"error: no llmos database under {args.home}")
        home, stats = args.home, evaluate_home(args.home)
    else:
        home, stats = asyncio.run(run(args))
    report(stats)
    samples, _ = replay(learn.read_telemetry(home / "llmos.db", 10_000))
    extra = heuristic_mae(samples)
    for name, value in extra.items():
        print(f"heuristic (session's last output) {name}: MAE {value:.3f}")
    result = {
        "home": str(home),
        "seconds": round(time.monotonic() - t0, 1),
        "rows": stats["rows"],
        "targets": {
            t["target"]: {
                "heldout": t["heldout"],
                "mae_model": t["mae_model"],
                "mae_baseline": t["mae_baseline"],
                "ratio": round(t["mae_model"] / t["mae_baseline"], 3)
                if t["mae_baseline"]
                else None,
            }
            for t in stats["targets"]
        },
        "heuristic_mae": {k: round(v, 3) for k, v in extra.items()},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
