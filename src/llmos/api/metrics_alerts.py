"""`llmos:alerts_active{kind}`: the anomaly alerts not cleared, read at scrape time
(kernel/anomaly.py). Every kind has a sample, zero included, so a rule that has
never fired is a flat line rather than a missing series."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmos.kernel import Kernel


class AlertsCollector(Collector):
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "llmos:alerts_active",
            "Anomaly alerts not cleared, by rule (token_rate, error_rate, latency, loop).",
            labels=["kind"],
        )
        for kind, n in self.kernel.anomalies.alerts.counts().items():
            active.add_metric([kind], n)
        yield active
