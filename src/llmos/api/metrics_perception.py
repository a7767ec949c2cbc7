"""Perception in `/metrics`: calls and worker seconds per kind (stt: speech to text,
ocr: text in images, tts: text to speech) since the kernel started, and the jobs in
the perception pool now. Per-process use is on the process (GET /v1/processes/{pid})."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmos.kernel import Kernel


class PerceptionCollector(Collector):
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = self.kernel.perception
        requests = CounterMetricFamily(
            "llmos:perception_requests", "Perception calls run, by kind.", labels=["kind"]
        )
        seconds = CounterMetricFamily(
            "llmos:perception_seconds",
            "Worker seconds spent on perception, by kind.",
            labels=["kind"],
        )
        for kind, total in p.totals.items():
            requests.add_metric([kind], total.requests)
            seconds.add_metric([kind], total.seconds)
        yield requests
        yield seconds
        yield GaugeMetricFamily(
            "llmos:perception_jobs",
            "Perception jobs running or waiting for a worker.",
            value=p.pool.busy,
        )
