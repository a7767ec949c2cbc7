"""The cluster: do devices on more Ray nodes add throughput, and does placement keep
a process's prefix cache? One run, one loopback Ray cluster (a head at 127.0.0.2
and a node at 127.0.0.3, started with `ray start` and stopped at the end), the
kernel in this process as the Ray driver.

1. scaling: N requests of T tokens at once, on 1 and then 2 replicas of a device
   with a fixed per-token time (the mock engine's `token_delay`: the machine's two
   cores do not confound it), each replica a Ray actor on its own node. Also the
   same single device in the kernel's own process (no Ray), for Ray's overhead.
   scaling = tokens/s with 2 replicas / tokens/s with 1 (goal >= 1.8).
2. affinity (the real SmolLM2, one replica on each node, 1 thread, 2 slots): P
   processes hold T-turn conversations, each with its own long system prompt; a
   turn's prompt is the last turn's plus the reply and a new question, asked after
   a think time of 0.1-0.6 s. P is at most the slots: when every slot is busy,
   placement takes whichever frees first (work-conserving), so affinity only
   matters below saturation. Placement
   `affinity` vs `least-loaded`: the share of later turns' prompt tokens the
   engine's prefix cache served (cached_tokens / prompt_tokens), later turns'
   mean time to first token, and how often a turn ran where the last one did.
3. resume (the same replicas, 1 slot each, `rr` with a 16-token quantum, more
   requests than slots): the share of resumed requests' snapshot tokens the prefix
   cache served, and how often a resume went back to its old device.

    flock /tmp/llmos-model.lock .venv/bin/python bench/cluster.py
    .venv/bin/python bench/cluster.py --quick --skip-real      # smoke run

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests._raycluster

from llmos.devices import MockDevice, cluster_spec
from llmos.devices.ray_device import RayDevice, connect, disconnect
from llmos.kernel import Done, Kernel, Request
from llmos.kernel.boot import group_of
from llmos.params import DEFAULT_MODEL_NAME, Settings
from tests._raycluster import LocalRayCluster

ADMIN = "bench-admin"
TOPICS = ["ships", "bees", "glass", "rivers", "clocks", "maps", "salt", "owls"]


def spec(name: str, node: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "resources": {"num_cpus": 0, "custom": {node: 1}}, **fields}


async def kernel_of(home: Path, groups: list[dict[str, Any]], **settings: Any) -> Kernel:
    fleet = [group_of(d, RayDevice) for d in cluster_spec.parse({"devices": groups}).devices]
    kernel = Kernel(
        Settings(home=home, admin_token=ADMIN, anomaly=False, **settings),
        [d for g in fleet for d in g.members],
        fleet,
    )
    await kernel.start()
    return kernel


async def done(req: Request) -> Request:
    while not isinstance(await req.events.get(), Done):
        pass
    if req.error is not None:
        raise RuntimeError(f"{req.id} failed: {req.error.message}")
    return req


async def chat(kernel: Kernel, who: Any, messages: list[dict[str, str]], n: int) -> Request:
    args = {"model": kernel.models()[0], "messages": messages, "max_tokens": n}
    req: Request = await kernel.call("llm.chat", who, {**args, "temperature": 0, "seed": 1})
    return await done(req)


# -- 1. scaling ------------------------------------------------------------------------
async def throughput(kernel: Kernel, n: int, tokens: int) -> float:
    admin = kernel.authenticate(ADMIN)
    messages = [{"role": "user", "content": "count"}]
    t0 = time.perf_counter()
    reqs = await asyncio.gather(*(chat(kernel, admin, messages, tokens) for _ in range(n)))
    wall = time.perf_counter() - t0
    assert all(r.output_tokens == tokens for r in reqs)
    return sum(r.output_tokens for r in reqs) / wall


async def scaling(home: Path, n: int, tokens: int, delay: float, slots: int) -> dict[str, Any]:
    fixed = {"engine": "mock", "model": "fixed", "slots": slots, "token_delay": delay}
    out: dict[str, Any] = {"requests": n, "tokens": tokens, "token_delay_s": delay, "slots": slots}
    local = Kernel(
        Settings(home=home / "local", admin_token=ADMIN, anomaly=False),
        [MockDevice(model="fixed", slots=slots, token_delay=delay)],
    )
    await local.start()
    out["local_tokens_per_s"] = await throughput(local, n, tokens)
    await local.stop()
    for replicas in (1, 2):
        groups = [spec("a", "node_a", **fixed), spec("b", "node_b", **fixed)][:replicas]
        kernel = await kernel_of(home / f"ray{replicas}", groups)
        await throughput(kernel, 2 * replicas, 4)  # warm: actors' first calls
        out[f"tokens_per_s_{replicas}"] = await throughput(kernel, n, tokens)
        await kernel.stop()
    out["scaling"] = out["tokens_per_s_2"] / out["tokens_per_s_1"]
    out["ray_vs_local"] = out["tokens_per_s_1"] / out["local_tokens_per_s"]
    return out


# -- 2. affinity -----------------------------------------------------------------------
def system_prompt(p: int, salt: str) -> str:
    facts = " ".join(
        f"Fact {i}: the {TOPICS[(p + i) % len(TOPICS)]} of house {salt}{p} number {i * 7 + p}."
        for i in range(24)
    )
    return f"You are the archivist of house {salt}{p}. Remember these facts. {facts}"


async def conversations(kernel: Kernel, procs: int, turns: int, salt: str) -> dict[str, Any]:
    admin = kernel.authenticate(ADMIN)
    rows: list[tuple[Request, bool]] = []

    async def one(p: int) -> None:
        think = random.Random(p)
        spawned = await kernel.call("proc.spawn", admin, {"name": f"conv{p}"})
        who = kernel.authenticate(spawned["token"])
        messages = [{"role": "system", "content": system_prompt(p, salt)}]
        last = None
        for t in range(turns):
            messages.append({"role": "user", "content": f"Tell me about fact {t}."})
            req = await chat(kernel, who, messages, 16)
            messages.append({"role": "assistant", "content": req.text})
            await asyncio.sleep(think.uniform(0.1, 0.6))  # the user reads, then asks
            if t > 0:
                rows.append((req, req.device == last))
            last = req.device

    await asyncio.gather(*(one(p) for p in range(procs)))
    prompt = sum(r.prompt_tokens for r, _ in rows)
    return {
        "later_turns": len(rows),
        "cache_hit": sum(r.cached_tokens for r, _ in rows) / prompt,
        "mean_ttft_s": statistics.mean(
            (r.first_token_at or 0) - r.created_at for r, _ in rows if r.first_token_at
        ),
        "same_device": sum(same for _, same in rows) / len(rows),
        "placements": dict(kernel.scheduler.placement.counts),
    }


async def resumes(kernel: Kernel, n: int, tokens: int) -> dict[str, Any]:
    admin = kernel.authenticate(ADMIN)
    story = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    await asyncio.gather(*(chat(kernel, admin, story, tokens) for _ in range(n)))
    s = kernel.scheduler.stats
    counts = kernel.scheduler.placement.counts
    return {
        "resumes": s.resumes,
        "resume_cache_hit": s.cache_hit,
        "resumed_on_old_device": counts["resume"] / s.resumes if s.resumes else None,
    }


async def placement(home: Path, procs: int, turns: int, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    smol = {"engine": "llamacpp", "model": DEFAULT_MODEL_NAME, "threads": 1, "ctx": 2048}
    for mode in ("affinity", "least-loaded"):
        groups = [spec("a", "node_a", slots=2, **smol), spec("b", "node_b", slots=2, **smol)]
        kernel = await kernel_of(home / f"aff-{mode}", groups, placement=mode)
        out[mode] = await conversations(kernel, procs, turns, salt=mode[0])
        await kernel.stop()
        groups = [spec("a", "node_a", slots=1, **smol), spec("b", "node_b", slots=1, **smol)]
        kernel = await kernel_of(
            home / f"res-{mode}", groups, placement=mode, policy="rr", quantum=16
        )
        out[f"resume_{mode}"] = await resumes(kernel, 3 if quick else 6, 48 if quick else 96)
        await kernel.stop()
    a, b = out["affinity"], out["least-loaded"]
    out["cache_hit_ratio"] = a["cache_hit"] / b["cache_hit"] if b["cache_hit"] else None
    out["ttft_ratio"] = a["mean_ttft_s"] / b["mean_ttft_s"]
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with LocalRayCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.start_head({"node_a": 4})
        cluster.add_node("b", {"node_b": 4})
        connect(cluster.address)
        try:
            n = 16 if args.quick else args.requests
            tokens = 20 if args.quick else args.tokens
            result["scaling"] = await scaling(Path(tmp), n, tokens, args.delay, args.slots)
            print("scaling", json.dumps(result["scaling"]), flush=True)
            if not args.skip_real:
                procs, turns = (2, 3) if args.quick else (args.procs, args.turns)
                result["placement"] = await placement(Path(tmp), procs, turns, args.quick)
                print("placement", json.dumps(result["placement"]), flush=True)
        finally:
            disconnect()
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run")
    ap.add_argument("--skip-real", action="store_true", help="only the fixed-pace devices")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--delay", type=float, default=0.02, help="seconds a token, per stream")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--procs", type=int, default=4, help="conversations (<= the 4 slots)")
    ap.add_argument("--turns", type=int, default=8)
    res = asyncio.run(main(ap.parse_args()))
    summary = {"scaling": res["scaling"]["scaling"], "scaling_run": res.pop("scaling"), **res}
    print("RESULT " + json.dumps(summary))
