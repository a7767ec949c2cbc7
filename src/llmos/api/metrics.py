"""Prometheus metrics, with vLLM's metric names (prefixed `llmos:`) where the meaning
matches. One registry per app: no module-level state."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmos.kernel import Kernel, Request

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class _Live(Collector):
    """Gauges read from the kernel at scrape time."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.kernel.scheduler
        running = GaugeMetricFamily(
            "llmos:num_requests_running", "Requests holding a slot.", labels=["device"]
        )
        peak = GaugeMetricFamily(
            "llmos:peak_requests_running", "Most requests ever in flight.", labels=["device"]
        )
        slots = GaugeMetricFamily("llmos:device_slots", "Slots per device.", labels=["device"])
        breaker = GaugeMetricFamily(
            "llmos:device_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open (1 and 2 get no new requests).",
            labels=["device"],
        )
        healthy = GaugeMetricFamily(
            "llmos:device_healthy", "Last health check: 1 answered, 0 failed.", labels=["device"]
        )
        faults = CounterMetricFamily(
            "llmos:device_faults", "Generations that failed on the device.", labels=["device"]
        )
        for d in self.kernel.devices:
            running.add_metric([d.name], len(s.running[d.name]))
            peak.add_metric([d.name], s.peak_running[d.name])
            slots.add_metric([d.name], d.slots)
            b = s.breakers[d.name]
            breaker.add_metric([d.name], int(b.state))
            healthy.add_metric([d.name], float("nan") if b.healthy is None else float(b.healthy))
            faults.add_metric([d.name], b.faults)
        yield from (running, peak, slots, breaker, healthy, faults)
        yield GaugeMetricFamily(
            "llmos:num_requests_waiting", "Requests on the run queue.", value=s.num_waiting()
        )
        yield CounterMetricFamily(
            "llmos:num_preemptions",
            "Running requests preempted so that others could run.",
            value=s.stats.preemptions,
        )
        yield CounterMetricFamily(
            "llmos:num_resumes",
            "Dispatches of requests that had run before.",
            value=s.stats.resumes,
        )
        hit = s.stats.cache_hit
        yield GaugeMetricFamily(
            "llmos:resume_cache_hit_ratio",
            "Fraction of snapshot tokens the prefix cache served on resume.",
            value=hit if hit is not None else float("nan"),
        )
        procs = self.kernel.procs.list()
        yield GaugeMetricFamily(
            "llmos:num_processes_alive",
            "Processes not exited or killed.",
            value=sum(p.state.alive for p in procs),
        )


class Metrics:
    def __init__(self, kernel: Kernel) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Live(kernel))
        r = self.registry
        self.prompt_tokens = Counter("llmos:prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("llmos:generation_tokens", "Tokens generated.", registry=r)
        self.success = Counter(
            "llmos:request_success",
            "Finished requests by finish reason.",
            ["finished_reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "llmos:time_to_first_token_seconds",
            "Time to first token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "llmos:e2e_request_latency_seconds",
            "End-to-end request latency.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "llmos:request_queue_time_seconds",
            "Time spent on the run queue.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        kernel.listeners.append(self.observe)

    def observe(self, req: Request) -> None:
        self.prompt_tokens.inc(req.prompt_tokens)
        self.generation_tokens.inc(req.output_tokens)
        self.success.labels(req.finish_reason or "unknown").inc()
        if req.first_token_at is not None:
            self.ttft.observe(req.first_token_at - req.created_at)
        if req.started_at is not None:
            self.queue.observe(req.started_at - req.created_at)
        if req.finished_at is not None:
            self.e2e.observe(req.finished_at - req.created_at)
