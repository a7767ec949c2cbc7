"""What the kernel knows about its own state, as figures and as sentences: the facts
`llmos ask` gives the model (ask.py) and shows the user.

Gathered from the sampler (queue depth now and over the window, tokens/s, CPU and
memory), the telemetry of the requests that finished in the window (latency
percentiles, errors, the slowest processes and the longest queue waits), the
active alerts, the devices and their circuit breakers, and the policy. Only
processes the caller may see are named; system-wide figures are every reader's
(as in `top`)."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from llmos.kernel import access
from llmos.kernel.percentile import percentile
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

WINDOW_S = 300.0  # the facts cover the last five minutes
TELEMETRY_ROWS = 5000  # at most this many of the newest requests are read
SLOWEST = 3  # processes named per ranking
ALERTS = 3  # active alerts quoted


@dataclass(frozen=True)
class Figure:
    """A key figure the answer must carry: `text` is how it is written."""

    label: str
    value: float
    text: str


@dataclass
class Facts:
    sentences: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    key: list[Figure] = field(default_factory=list)


def _mb(n: float) -> int:
    return round(n / 2**20)


def gather(k: Kernel, caller: Caller, window_s: float = WINDOW_S) -> Facts:
    facts = Facts()
    mins = f"{window_s / 60:g} min"
    _queue(k, facts, window_s, mins)
    rows = [
        r for r in k.store.telemetry(TELEMETRY_ROWS) if r["created_at"] >= time.time() - window_s
    ]
    _latency(facts, rows, mins)
    _resources(k, facts)
    _processes(k, caller, facts, rows, mins)
    _alerts(k, caller, facts)
    _devices(k, facts)
    facts.data["window_s"] = window_s
    facts.data["policy"] = k.scheduler.policy_name
    facts.sentences.append(f"Scheduling policy: {k.scheduler.policy_name}.")
    return facts


def _queue(k: Kernel, facts: Facts, window_s: float, mins: str) -> None:
    s = k.scheduler
    latest = k.sysmon.latest()
    history = k.sysmon.since(window_s) or [latest]
    waiting, running = s.num_waiting(), s.num_running()
    slots = sum(d.slots for d in k.devices)
    avg = statistics.fmean(x.waiting for x in history)
    peak = max(x.waiting for x in history)
    tps = latest.tokens_per_s
    tps_avg = statistics.fmean(x.tokens_per_s for x in history)
    facts.data.update(
        waiting=waiting,
        running=running,
        slots=slots,
        waiting_avg=round(avg, 2),
        waiting_peak=peak,
        tokens_per_s=round(tps, 2),
        tokens_per_s_avg=round(tps_avg, 2),
    )
    facts.sentences += [
        f"Queue: {waiting} requests waiting now (average {avg:.1f}, peak {peak} over the "
        f"last {mins}); {running} running on {slots} slots.",
        f"Throughput: {tps:.1f} tokens/s now, {tps_avg:.1f} tokens/s on average over the "
        f"last {mins}.",
    ]
    facts.key += [
        Figure("waiting", waiting, f"{waiting} requests waiting"),
        Figure("throughput", round(tps, 1), f"{tps:.1f} tokens/s"),
    ]


def _latency(facts: Facts, rows: list[dict[str, Any]], mins: str) -> None:
    e2e = [r["total_s"] for r in rows if r["finish_reason"] in ("stop", "length")]
    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    wait = [r["queue_wait_s"] for r in rows if r["queue_wait_s"] is not None]
    failed = sum(r["finish_reason"] not in ("stop", "length") for r in rows)
    p50, p95 = percentile(e2e, 50), percentile(e2e, 95)
    ttft50, wait50 = percentile(ttft, 50), percentile(wait, 50)
    facts.data.update(
        requests=len(rows),
        errors=failed,
        e2e_p50_s=p50,
        e2e_p95_s=p95,
        ttft_p50_s=ttft50,
        queue_wait_p50_s=wait50,
    )
    if not rows:
        facts.sentences.append(f"No request finished in the last {mins}.")
        return
    parts = []
    if p50 is not None and p95 is not None:
        parts.append(f"end-to-end p50 {p50:.2f} s, p95 {p95:.2f} s")
        facts.key.append(Figure("p95 latency", round(p95, 2), f"{p95:.2f} s end to end (p95)"))
    if ttft50 is not None:
        parts.append(f"time to first token p50 {ttft50:.2f} s")
    if wait50 is not None:
        parts.append(f"queue wait p50 {wait50:.2f} s")
    errors = f" {failed} of them failed." if failed else ""
    facts.sentences.append(
        f"Latency of the {len(rows)} requests that finished in the last {mins}: "
        f"{'; '.join(parts) or 'none completed'}.{errors}"
    )


def _resources(k: Kernel, facts: Facts) -> None:
    last = k.sysmon.latest()
    cores = psutil.cpu_count() or 1
    facts.data.update(
        cpu_percent=last.cpu_percent,
        rss_bytes=last.rss_bytes,
        children_cpu_percent=last.children_cpu_percent,
        children_rss_bytes=last.children_rss_bytes,
        cores=cores,
    )
    facts.sentences.append(
        f"Kernel process (engines included): CPU {last.cpu_percent:.0f}% of {cores * 100}% "
        f"({cores} cores), memory {_mb(last.rss_bytes)} MB; agents and tools: CPU "
        f"{last.children_cpu_percent:.0f}%, memory {_mb(last.children_rss_bytes)} MB."
    )


@dataclass(frozen=True)
class ProcStats:
    pid: int
    name: str
    owner: str
    requests: int
    mean_total_s: float
    mean_queue_wait_s: float | None

    def text(self) -> str:
        wait = self.mean_queue_wait_s
        return f"pid {self.pid} '{self.name}' {self.mean_total_s:.2f} s over {self.requests} " + (
            "requests" if wait is None else f"requests (mean queue wait {wait:.2f} s)"
        )


def _processes(
    k: Kernel, caller: Caller, facts: Facts, rows: list[dict[str, Any]], mins: str
) -> None:
    """The visible processes with the slowest requests and the longest queue waits."""
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_pid[r["pid"]].append(r)
    stats = []
    for pid, mine in by_pid.items():
        proc = k.procs.find(pid)
        if proc is None or not access.may_see(k, caller, proc):
            continue
        waits = [r["queue_wait_s"] for r in mine if r["queue_wait_s"] is not None]
        stats.append(
            ProcStats(
                pid,
                proc.name,
                proc.owner,
                len(mine),
                round(statistics.fmean(r["total_s"] for r in mine), 3),
                round(statistics.fmean(waits), 3) if waits else None,
            )
        )
    slowest = sorted(stats, key=lambda x: -x.mean_total_s)[:SLOWEST]
    waited = sorted(
        (x for x in stats if x.mean_queue_wait_s is not None),
        key=lambda x: -(x.mean_queue_wait_s or 0.0),
    )[:SLOWEST]
    facts.data["slowest"] = [dict(x.__dict__) for x in slowest]
    facts.data["longest_waits"] = [dict(x.__dict__) for x in waited]
    if not slowest:
        return
    named = "; ".join(x.text() for x in slowest)
    facts.sentences.append(f"Slowest processes in the last {mins} (mean end to end): {named}.")
    top = slowest[0]
    facts.key.append(
        Figure(
            "slowest process",
            top.mean_total_s,
            f"pid {top.pid} '{top.name}' {top.mean_total_s:.2f} s per request",
        )
    )
    if waited and waited[0].pid != top.pid:
        w = waited[0]
        facts.sentences.append(
            f"Longest queue wait: pid {w.pid} '{w.name}', {w.mean_queue_wait_s:.2f} s on average."
        )


def _alerts(k: Kernel, caller: Caller, facts: Facts) -> None:
    active = k.anomalies.active_for(caller)
    facts.data["alerts"] = active
    if not active:
        facts.sentences.append("No active anomaly alerts.")
        return
    quoted = " ".join(f"Alert {a['id']} ({a['kind']}): {a['message']}." for a in active[:ALERTS])
    more = f" ({len(active) - ALERTS} more.)" if len(active) > ALERTS else ""
    facts.sentences.append(f"{len(active)} active anomaly alerts. {quoted}{more}")
    facts.key.append(Figure("alerts", len(active), f"{len(active)} active alerts"))


def _devices(k: Kernel, facts: Facts) -> None:
    last = k.sysmon.latest()
    out = []
    for d in k.devices:
        breaker = k.scheduler.breakers[d.name]
        busy = len(k.scheduler.running[d.name])
        rate = float(last.devices.get(d.name, {}).get("tokens_per_s", 0.0))
        state = breaker.state.name.lower().replace("_", "-")
        out.append(
            {
                "name": d.name,
                "model": d.model,
                "breaker": state,
                "last_error": breaker.last_error,
                "busy": busy,
                "slots": d.slots,
                "tokens_per_s": round(rate, 2),
            }
        )
        trouble = f" (last error: {breaker.last_error})" if state != "closed" else ""
        facts.sentences.append(
            f"Device {d.name} (model {d.model}): circuit {state}{trouble}, {busy} of "
            f"{d.slots} slots busy, {rate:.1f} tokens/s."
        )
    facts.data["devices"] = out
