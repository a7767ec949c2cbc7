"""What does the kernel cost? One run, one embedded engine, one workload, one client:

  (a) direct: the engine's own llama.cpp HTTP server (what a user would run instead);
  (b) llmos:  the same engine behind the llmos kernel and its OpenAI-compatible API.

The engine and the kernel live in this process; the load client runs in a separate
process (the same code for both sides), so neither side pays for the client's GIL.
Sides alternate (a, b, a, b, ...) to spread drift. Prints tokens/s for both, their
ratio, and the latency llmos adds per request; the last line is `RESULT {json}`.

    python bench/overhead.py            # 64 requests, 16 concurrent, max_tokens 32
    python bench/overhead.py --quick    # a smaller run, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TOPICS = ["the sea", "volcanoes", "bread", "chess", "owls", "rain", "copper", "kites"]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Request {i}: write two sentences about {TOPICS[i % 8]}."}]


# -- the load client (runs in its own process) ---------------------------------------
async def _load(
    url: str, token: str, model: str, n: int, conc: int, max_tokens: int
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    tokens = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=600) as c:

        async def worker() -> None:
            nonlocal tokens
            while not queue.empty():
                i = queue.get_nowait()
                body = {
                    "model": model,
                    "messages": _messages(i),
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "seed": 42,
                }
                t0 = time.perf_counter()
                r = await c.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                tokens += r.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "tokens": tokens, "latencies": latencies}


def client_main(argv: list[str]) -> None:
    url, token, model, n, conc, max_tokens = argv
    out = asyncio.run(_load(url, token, model, int(n), int(conc), int(max_tokens)))
    print(json.dumps(out))


def _run_client(
    url: str, token: str, model: str, n: int, conc: int, max_tokens: int
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--client",
        url,
        token,
        model,
        str(n),
        str(conc),
        str(max_tokens),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the servers (this process) -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", type=int, default=24, help="sequential requests (max_tokens 8)")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.concurrency, args.rounds, args.probe = 24, 8, 1, 12

    import uvicorn

    from llmos.api import create_app
    from llmos.devices import LlamaCppDevice, default_model_path
    from llmos.kernel import Kernel
    from llmos.params import Settings

    model = "SmolLM2-135M-Instruct"
    token = "bench-admin-token"
    home = Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    device = LlamaCppDevice(
        default_model_path(), slots=args.concurrency, ctx=256, threads=args.threads, model=model
    )
    kernel = Kernel(
        Settings(home=home, admin_token=token, slots=args.concurrency, ctx=256), [device]
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(kernel), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    llmos_url = f"http://127.0.0.1:{port}"
    direct_url = device.listening_address
    load = (args.requests, args.concurrency, args.max_tokens)
    try:
        # Warm both paths (and the engine's caches) before measuring.
        _run_client(direct_url, device.api_key, model, args.concurrency, args.concurrency, 8)
        _run_client(llmos_url, token, model, args.concurrency, args.concurrency, 8)
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "llmos": []}
        for _ in range(args.rounds):
            runs["direct"].append(_run_client(direct_url, device.api_key, model, *load))
            runs["llmos"].append(_run_client(llmos_url, token, model, *load))
        # One request at a time: what llmos adds to a single request, free of batching.
        probe = (args.probe, 1, 8)
        solo = {
            "direct": _run_client(direct_url, device.api_key, model, *probe),
            "llmos": _run_client(llmos_url, token, model, *probe),
        }
        peak = kernel.scheduler.peak_running[device.name]
    finally:
        server.should_exit = True
        thread.join(timeout=60)

    def summary(side: str) -> dict[str, float]:
        rs = runs[side]
        lat = [x for r in rs for x in r["latencies"]]
        return {
            "tok_s": sum(r["tokens"] for r in rs) / sum(r["wall_s"] for r in rs),
            "tokens": sum(r["tokens"] for r in rs),
            "mean_ms": 1000 * statistics.fmean(lat),
            "p50_ms": 1000 * statistics.median(lat),
            "p95_ms": 1000 * _pct(lat, 0.95),
        }

    d, m = summary("direct"), summary("llmos")
    result = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "direct_tok_s": round(d["tok_s"], 1),
        "llmos_tok_s": round(m["tok_s"], 1),
        "ratio": round(m["tok_s"] / d["tok_s"], 3),
        "direct_p50_ms": round(d["p50_ms"], 1),
        "llmos_p50_ms": round(m["p50_ms"], 1),
        "added_p50_ms": round(m["p50_ms"] - d["p50_ms"], 1),
        "added_p95_ms": round(m["p95_ms"] - d["p95_ms"], 1),
        "added_mean_ms": round(m["mean_ms"] - d["mean_ms"], 1),
        "solo_added_p50_ms": round(
            1000
            * (
                statistics.median(solo["llmos"]["latencies"])
                - statistics.median(solo["direct"]["latencies"])
            ),
            1,
        ),
        "same_tokens": d["tokens"] == m["tokens"],
        "kernel_peak_running": peak,
    }
    for label, x in (("direct llama.cpp server", d), ("through llmos", m)):
        print(
            f"{label:24s}: {x['tok_s']:7.1f} tok/s   "
            f"p50 {x['p50_ms']:7.1f} ms   p95 {x['p95_ms']:7.1f} ms"
        )
    print(
        f"ratio llmos/direct      : {result['ratio']:.3f}   "
        f"added p50 {result['added_p50_ms']} ms   p95 {result['added_p95_ms']} ms   "
        f"mean {result['added_mean_ms']} ms"
    )
    print(f"one request at a time   : llmos adds {result['solo_added_p50_ms']} ms at p50")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        main()
