"""Many clients at once: does the kernel hold up? N concurrent clients for D seconds on
loopback, against `llmos up` in a subprocess: first on the mock device (the kernel and
the HTTP stack alone), then on the real embedded model.

Each client is an agent with its own process token (so the per-token rate limit
applies) and loops until the time is up over a mix of small requests: chat with
`max_tokens` 8 (60%), the same streamed (20%), and GET /v1/models (20%). A 429 is
honoured (the client sleeps Retry-After, capped); it is the only error allowed.
Prints requests/s, p50/p99 latency of answered requests, errors by type, and the
kernel's RSS at start and end; the last line is `RESULT {json}`.

    python bench/load.py              # 500 clients x 60 s per device
    python bench/load.py --quick      # 50 clients x 10 s per device
    python bench/load.py --devices mock --clients 200 --duration 30

Bounded: no new request starts after the duration; requests still in flight get
`--grace` seconds more, then are cancelled and counted as `unfinished` (which, like
any error but 429 or a kernel that stops answering, makes `ok` false).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _upproc import llmos_up

TOKEN = "bench-load-admin-token"
MIX = (("chat", 0.6), ("stream", 0.2), ("models", 0.2))
MAX_RETRY_SLEEP = 2.0  # seconds a client waits at most on a 429


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # answered requests, seconds
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    unfinished: int = 0  # clients still waiting for an answer when the grace ran out


# -- the server ----------------------------------------------------------------------
@contextlib.contextmanager
def kernel(device: str, home: Path, args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """`llmos up` on 127.0.0.1 (mock or the embedded model); yields (url, pid)."""
    flags = ["--slots", str(args.slots), "--ctx", "512", "--threads", str(args.threads)]
    if device == "mock":
        flags += ["--device", "mock"]
    with llmos_up(home, flags, TOKEN, f"{device}.log") as (url, pid):
        yield url, pid


def rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


# -- the clients ---------------------------------------------------------------------
async def _one(
    http: httpx.AsyncClient, auth: dict[str, str], kind: str, model: str, i: int, tally: Tally
) -> float:
    """One request; returns seconds to sleep before the next (Retry-After on a 429)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Say something short about the number {i}."}],
        "max_tokens": 8,
        "temperature": 0,
    }
    t0 = time.perf_counter()
    try:
        if kind == "models":
            r = await http.get("/v1/models", headers=auth)
        elif kind == "chat":
            r = await http.post("/v1/chat/completions", json=body, headers=auth)
        else:
            stream = {**body, "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=stream, headers=auth) as r:
                if r.status_code != 200:
                    await r.aread()
                else:
                    async for line in r.aiter_lines():
                        if line.startswith('data: {"error"'):
                            code = json.loads(line[6:])["error"].get("code")
                            tally.errors[f"stream:{code}"] += 1
                            return 0.0
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1
        return 0.0
    if r.status_code == 200:
        tally.latencies.append(time.perf_counter() - t0)
        tally.kinds[kind] += 1
        return 0.0
    tally.errors[str(r.status_code)] += 1
    if r.status_code == 429:
        return min(MAX_RETRY_SLEEP, float(r.headers.get("retry-after") or 1))
    return 0.0


async def drive(url: str, model: str, tokens: list[str], duration: float, grace: float) -> Tally:
    """One client per token, looping until `duration` is up; bounded by `grace` more."""
    tally = Tally()
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    timeout = httpx.Timeout(duration + grace, connect=30)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:

        async def client(c: int, token: str) -> None:
            rnd = random.Random(c)
            auth = {"Authorization": f"Bearer {token}"}
            i = 0
            while time.monotonic() < stop_at:
                kind = rnd.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
                pause = await _one(http, auth, kind, model, c * 100_000 + i, tally)
                i += 1
                if pause:
                    await asyncio.sleep(min(pause, max(0.0, stop_at - time.monotonic())))

        tasks = [asyncio.create_task(client(c, t)) for c, t in enumerate(tokens)]
        done, pending = await asyncio.wait(tasks, timeout=duration + grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if (exc := task.exception()) is not None:
                tally.errors[f"client:{type(exc).__name__}"] += 1
        tally.unfinished = len(pending)
    return tally


def spawn_agents(url: str, n: int) -> list[str]:
    """One process (and so one token) per client, as real agents would have."""
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=admin, timeout=30) as http:
        out = []
        for i in range(n):
            r = http.post("/v1/processes", json={"name": f"load-{i}"})
            r.raise_for_status()
            out.append(r.json()["token"])
        return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_device(device: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    home = root / device
    home.mkdir()
    with kernel(device, home, args) as (url, pid):
        admin = {"Authorization": f"Bearer {TOKEN}"}
        model = httpx.get(url + "/v1/models", headers=admin, timeout=30).json()["data"][0]["id"]
        tokens = spawn_agents(url, args.clients)
        rss_start = rss_mb(pid)
        t0 = time.perf_counter()
        tally = asyncio.run(drive(url, model, tokens, args.duration, args.grace))
        wall = time.perf_counter() - t0
        rss_end = rss_mb(pid)
        alive = httpx.get(url + "/healthz", timeout=30).status_code == 200
    lat = tally.latencies
    bad = {k: v for k, v in tally.errors.items() if k != "429"}
    if bad:  # what the kernel said about it
        tail = (home / f"{device}.log").read_text(errors="replace").splitlines()[-40:]
        print(f"--- {device} kernel log (last lines) ---", *tail, sep="\n", file=sys.stderr)
    return {
        "device": device,
        "model": model,
        "clients": args.clients,
        "duration_s": args.duration,
        "wall_s": round(wall, 1),
        "answered": len(lat),
        "by_kind": dict(tally.kinds),
        "requests_per_s": round(len(lat) / wall, 1),
        "p50_ms": None if not lat else round(1000 * statistics.median(lat), 1),
        "p99_ms": None if not lat else round(1000 * (_pct(lat, 0.99) or 0), 1),
        "errors": dict(tally.errors),
        "only_429": not bad,
        "unfinished": tally.unfinished,
        "healthy_after": alive,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="50 clients x 10 s per device")
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per device")
    ap.add_argument("--grace", type=float, default=60.0, help="seconds for in-flight requests")
    ap.add_argument("--devices", default="mock,real", help="comma-separated: mock, real")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.clients, args.duration, args.grace = 50, 10.0, 30.0
    results = []
    with tempfile.TemporaryDirectory(prefix="llmos-load-") as tmp:
        for device in args.devices.split(","):
            r = run_device(device.strip(), args, Path(tmp))
            results.append(r)
            print(
                f"{r['device']:>5}: {r['clients']} clients x {r['duration_s']:g} s: "
                f"{r['requests_per_s']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                f"errors {r['errors'] or 'none'}, unfinished {r['unfinished']}, "
                f"kernel RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MiB",
                flush=True,
            )
    ok = all(r["only_429"] and r["healthy_after"] and not r["unfinished"] for r in results)
    print("RESULT " + json.dumps({"ok": ok, "runs": results}))


if __name__ == "__main__":
    main()
