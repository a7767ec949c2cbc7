"""The kernel watching itself: a sampler that every `interval_s` reads the host's
resources (psutil: CPU and RSS of the kernel, whose threads include the embedded
engines, and of its child processes — agents, MCP servers), the devices' slot
occupancy and decode rate, the run queues, and the latencies of the requests that
finished since the last sample. The samples form a bounded history (charts, the
anomaly detector, `llmos ask`); the newest one, with the live process table,
is what `llmos top` and the dashboard show (`sys.top`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from llmos.errors import InvalidRequest
from llmos.kernel import bgtask
from llmos.kernel.enginemon import EngineMonitor
from llmos.kernel.percentile import percentile
from llmos.kernel.request import Request
from llmos.kernel.sysdefs import READERS, Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 2.0
HISTORY_S = 3600.0  # the history keeps this much


@dataclass
class Sample:
    t: float  # wall clock
    waiting: int
    running: int
    slots: int
    tokens_per_s: float  # decoded by all devices since the previous sample
    finished: int  # requests that ended since the previous sample
    errors: int  # of those, ended by an error (not stop or length)
    ttft_p50_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    cpu_percent: float  # the kernel's process (engines included), 100 = one core
    rss_bytes: int
    children_cpu_percent: float  # agents, MCP servers, sandboxes
    children_rss_bytes: int
    devices: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Sampler:
    def __init__(
        self, kernel: Kernel, interval_s: float = SAMPLE_INTERVAL_S, history_s: float = HISTORY_S
    ) -> None:
        self.k = kernel
        self.interval_s = interval_s
        self.history: deque[Sample] = deque(maxlen=max(2, int(history_s / interval_s)))
        self.me = psutil.Process()
        self._children: dict[int, psutil.Process] = {}
        self._finished: deque[Request] = deque(maxlen=100_000)  # since the last sample
        self._decoded = dict(kernel.scheduler.decoded)
        self._proc_tokens: dict[int, int] = {}  # pid -> tokens out at the last sample
        self.proc_rates: dict[int, float] = {}  # pid -> tokens/s over the last interval
        self.device_rates: dict[str, float] = {}
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.engines = EngineMonitor(kernel.devices, interval_s)  # KV cache, engine counters
        self.listeners: list[Any] = []  # called with each new Sample (anomaly detection)
        kernel.listeners.append(self._finished.append)
        self.me.cpu_percent(None)  # the first reading primes the counter

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.engines.start()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        await self.engines.stop()
        task, self._task = self._task, None
        await bgtask.cancel(task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sample()
            except Exception:  # a failed reading must not stop the sampler
                log.exception("system sample failed")

    # -- one sample ----------------------------------------------------------------
    def tokens_out(self, pid: int) -> int:
        """A process's generated tokens so far, its running requests' included."""
        live = sum(r.output_tokens for r in self.k.live.get(pid, ()))
        return self.k.procs.get(pid).tokens_out + live

    def sample(self) -> Sample:
        now = time.monotonic()
        dt = max(now - self._last, 1e-6)
        self._last = now
        s = self.k.scheduler
        devices: dict[str, dict[str, float]] = {}
        for gone in set(self.device_rates) - {d.name for d in self.k.devices}:
            del self.device_rates[gone]  # a replica that left (fleet.py)
        for d in self.k.devices:
            rate = (s.decoded[d.name] - self._decoded.get(d.name, 0)) / dt
            self._decoded[d.name] = s.decoded[d.name]
            self.device_rates[d.name] = rate
            busy = len(s.running[d.name])
            devices[d.name] = {
                "busy": busy,
                "slots": d.slots,
                "occupancy": busy / d.slots if d.slots else 0.0,
                "tokens_per_s": rate,
                "waiting": len(s.queue(s.routes[d.name])),
                **self.engines.kv(d.name),  # where the engine reports it
            }
        rates: dict[int, float] = {}
        for proc in self.k.procs.list():
            if not proc.state.alive:
                continue
            total = self.tokens_out(proc.pid)
            rates[proc.pid] = max(0, total - self._proc_tokens.get(proc.pid, total)) / dt
            self._proc_tokens[proc.pid] = total
        self._proc_tokens = {p: t for p, t in self._proc_tokens.items() if p in rates}
        self.proc_rates = rates
        done = list(self._finished)
        self._finished.clear()
        ttft = [r.first_token_at - r.created_at for r in done if r.first_token_at is not None]
        e2e = [r.finished_at - r.created_at for r in done if r.finished_at is not None]
        errors = sum(r.finish_reason not in ("stop", "length") for r in done)
        mem = self.me.memory_info()
        ccpu, crss = self._children_usage()
        sample = Sample(
            t=time.time(),
            waiting=s.num_waiting(),
            running=s.num_running(),
            slots=sum(d.slots for d in self.k.devices),
            tokens_per_s=sum(self.device_rates.values()),
            finished=len(done),
            errors=errors,
            ttft_p50_s=percentile(ttft, 50),
            e2e_p50_s=percentile(e2e, 50),
            e2e_p95_s=percentile(e2e, 95),
            cpu_percent=self.me.cpu_percent(None),
            rss_bytes=mem.rss,
            children_cpu_percent=ccpu,
            children_rss_bytes=crss,
            devices=devices,
        )
        self.history.append(sample)
        for listener in self.listeners:
            try:
                listener(sample)
            except Exception:
                log.exception("sample listener failed")
        return sample

    def _children_usage(self) -> tuple[float, int]:
        """CPU and RSS summed over the kernel's descendants (kept between samples so
        that cpu_percent measures the interval)."""
        cpu, rss, seen = 0.0, 0, set()
        try:
            kids = self.me.children(recursive=True)
        except psutil.Error:
            kids = []
        for kid in kids:
            proc = self._children.setdefault(kid.pid, kid)
            seen.add(kid.pid)
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:
                seen.discard(kid.pid)
        self._children = {p: c for p, c in self._children.items() if p in seen}
        return cpu, rss

    # -- views ---------------------------------------------------------------------
    def latest(self) -> Sample:
        return self.history[-1] if self.history else self.sample()

    def since(self, seconds: float) -> list[Sample]:
        cut = time.time() - seconds
        return [x for x in self.history if x.t >= cut]


def top(k: Kernel, c: Caller) -> dict[str, Any]:
    """What `llmos top` shows: the caller's visible processes with their rates,
    the devices, the run queues, the host's resources and the open alerts."""
    m = k.sysmon
    last = m.latest()
    procs = []
    for p in k.list_processes(c):
        row = p.to_dict()
        row["tokens_per_s"] = round(m.proc_rates.get(p.pid, 0.0), 2)
        row["tokens_out"] = m.tokens_out(p.pid)  # its running requests' tokens too
        procs.append(row)
    devices = [
        {
            "name": d.name,
            "model": d.model,
            "kind": d.kind,
            "breaker": k.scheduler.breakers[d.name].state.name.lower(),
            **last.devices.get(d.name, {"slots": d.slots}),
            "busy": len(k.scheduler.running[d.name]),
        }
        for d in k.devices
    ]
    return {
        "time": time.time(),
        "uptime_s": round(time.time() - k.started_at, 3),
        "policy": k.scheduler.policy_name,
        "processes": procs,
        "devices": devices,
        "queues": {model: k.scheduler.depth(model) for model in k.models()},
        "waiting": k.scheduler.num_waiting(),
        "running": k.scheduler.num_running(),
        "system": {
            "cpu_percent": last.cpu_percent,
            "rss_bytes": last.rss_bytes,
            "children_cpu_percent": last.children_cpu_percent,
            "children_rss_bytes": last.children_rss_bytes,
            "cores": psutil.cpu_count() or 1,
        },
        "sample": last.to_dict(),
        "alerts": k.anomalies.active_for(c),  # active, of processes the caller may see
    }


async def _sys_top(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return top(k, c)


async def _sys_history(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    seconds = a.get("seconds", 600)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise InvalidRequest("seconds must be a positive number", param="seconds")
    return {
        "object": "list",
        "interval_s": k.sysmon.interval_s,
        "data": [x.to_dict() for x in k.sysmon.since(float(seconds))],
    }


SYSMON_SYSCALLS = (
    Syscall("sys.top", _sys_top, READERS, "processes with rates, devices, queues, resources"),
    Syscall("sys.history", _sys_history, READERS, "sampled system metrics over time"),
)
