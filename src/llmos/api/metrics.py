"""Prometheus metrics, with vLLM's metric names (prefixed `llmos:`) where the meaning
matches, plus llmos's own (per-owner tokens, per-policy queue depth, the host's
resources, KV cache). One registry per app: no module-level state.

Here: what finished requests tell (counters and histograms, fed by the kernel's
listener); metrics_live.py: gauges read at scrape time."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from llmos.api.metrics_alerts import AlertsCollector
from llmos.api.metrics_cluster import ClusterCollector
from llmos.api.metrics_live import LiveCollector
from llmos.api.metrics_perception import PerceptionCollector
from llmos.kernel import Kernel, Request

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
ITL_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000,
)  # fmt: skip


class WeightedHistogram(Collector):
    """A histogram whose observations carry a weight: a request's inter-token gaps are
    known as their count and sum (Request.itl_gaps, itl_total_s), so the request adds
    `gaps` observations of its mean gap. Count and sum are exact, like vLLM's
    per-token histogram; only the spread within one request is lost.
    Invariant: touched only from the event loop (listeners and scrapes both run there)."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, value: float, weight: int) -> None:
        if weight <= 0:
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.total += value * weight

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, n in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else str(float(bound))
            buckets.append((le, float(cumulative)))
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.total)


class Metrics:
    def __init__(self, kernel: Kernel) -> None:
        self.registry = r = CollectorRegistry()
        r.register(LiveCollector(kernel))
        r.register(AlertsCollector(kernel))  # llmos:alerts_active{kind}
        r.register(PerceptionCollector(kernel))  # llmos:perception_*{kind}
        r.register(ClusterCollector(kernel))  # replicas, scaling decisions, placements
        self.prompt_tokens = Counter("llmos:prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("llmos:generation_tokens", "Tokens generated.", registry=r)
        self.owner_tokens = Counter(
            "llmos:owner_tokens",
            "Tokens of finished requests per owner (user), prompt or generation.",
            ["owner", "direction"],
            registry=r,
        )
        self.success = Counter(
            "llmos:request_success",
            "Finished requests by finish reason.",
            ["finished_reason"],
            registry=r,
        )
        self.preempted = Histogram(
            "llmos:request_preemptions",
            "Times a finished request lost its slot before it was done.",
            buckets=(0, 1, 2, 5, 10, 20, 50),
            registry=r,
        )
        self.ttft = self._histogram(
            "llmos:time_to_first_token_seconds", "Time to first token.", LATENCY_BUCKETS
        )
        self.e2e = self._histogram(
            "llmos:e2e_request_latency_seconds", "End-to-end request latency.", LATENCY_BUCKETS
        )
        self.queue = self._histogram(
            "llmos:request_queue_time_seconds",
            "Time from arrival to the first slot.",
            LATENCY_BUCKETS,
        )
        self.tpot = self._histogram(
            "llmos:request_time_per_output_token_seconds",
            "A request's mean time between two of its tokens (gaps while preempted left out).",
            ITL_BUCKETS,
        )
        self.prompt_len = self._histogram(
            "llmos:request_prompt_tokens", "Prompt tokens per finished request.", TOKEN_BUCKETS
        )
        self.output_len = self._histogram(
            "llmos:request_generation_tokens",
            "Generated tokens per finished request.",
            TOKEN_BUCKETS,
        )
        self.itl = WeightedHistogram(
            "llmos:inter_token_latency_seconds",
            "Time between two consecutive tokens of a request (gaps while preempted left "
            "out); each request adds its gaps at their mean.",
            ITL_BUCKETS,
        )
        r.register(self.itl)
        kernel.listeners.append(self.observe)

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, doc, buckets=buckets, registry=self.registry)

    def observe(self, req: Request) -> None:
        self.prompt_tokens.inc(req.prompt_tokens)
        self.generation_tokens.inc(req.output_tokens)
        self.owner_tokens.labels(req.owner, "prompt").inc(req.prompt_tokens)
        self.owner_tokens.labels(req.owner, "generation").inc(req.output_tokens)
        self.success.labels(req.finish_reason or "unknown").inc()
        self.preempted.observe(req.preemptions)
        self.prompt_len.observe(req.prompt_tokens)
        self.output_len.observe(req.output_tokens)
        if req.first_token_at is not None:
            self.ttft.observe(req.first_token_at - req.created_at)
        if req.started_at is not None:
            self.queue.observe(req.started_at - req.created_at)
        if req.finished_at is not None:
            self.e2e.observe(req.finished_at - req.created_at)
        if req.itl_s is not None:
            self.tpot.observe(req.itl_s)
            self.itl.observe(req.itl_s, req.itl_gaps)
