"""The cluster's metrics (kernel/fleet.py, autoscale.py, placement.py):

- `llmos:device_replicas{group}`: active replicas of each group, read at scrape time;
- `llmos:autoscale_decisions_total{group,action}`: scaling events since this app
  started (told by the fleet), every group x action present from zero;
- `llmos:placements_total{rule}`: dispatches each placement rule decided.

Invariant: touched only from the event loop (the fleet's listener and scrapes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmos.kernel import Kernel
from llmos.kernel.fleet import ACTIONS

RULES = ("resume", "affinity", "least-loaded")  # kernel/placement.py


class ClusterCollector(Collector):
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.decisions: Counter[tuple[str, str]] = Counter()
        kernel.fleet_listeners.append(self.decided)

    def decided(self, group: str, action: str) -> None:
        self.decisions[(group, action)] += 1

    def collect(self) -> Iterator[Metric]:
        fleet = self.kernel.fleet
        replicas = GaugeMetricFamily(
            "llmos:device_replicas", "Active replicas of a replica group.", labels=["group"]
        )
        for g in fleet.groups.values():
            replicas.add_metric([g.name], len(fleet.active(g)))
        yield replicas
        decisions = CounterMetricFamily(
            "llmos:autoscale_decisions",
            "Scaling decisions carried out, by group and action (up, down, replace, failed).",
            labels=["group", "action"],
        )
        for name in fleet.groups:
            for action in ACTIONS:
                decisions.add_metric([name, action], self.decisions[(name, action)])
        yield decisions
        placements = CounterMetricFamily(
            "llmos:placements",
            "Requests placed on a device, by the rule that chose it.",
            labels=["rule"],
        )
        counts = self.kernel.scheduler.placement.counts
        for rule in RULES:
            placements.add_metric([rule], counts[rule])
        yield placements
