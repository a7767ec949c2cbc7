"""The gauges of `/metrics` read from the kernel at scrape time: the scheduler's
queues and slots, the devices' state, the sampler's latest reading of the host
(CPU, RSS, slot occupancy, decode rate) and the engines' own figures (KV cache).

Per-process figures are left out on purpose: a pid label would make a new series
for every agent run. They are in `GET /v1/sys/top`."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmos.kernel import Kernel

Family = GaugeMetricFamily | CounterMetricFamily


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class LiveCollector(Collector):
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def collect(self) -> Iterator[Family]:
        yield from self._scheduler()
        yield from self._devices()
        yield from self._system()
        yield from self._engines()

    def _scheduler(self) -> Iterator[Family]:
        s = self.kernel.scheduler
        yield GaugeMetricFamily(
            "llmos:num_requests_waiting", "Requests on the run queue.", value=s.num_waiting()
        )
        yield GaugeMetricFamily(
            "llmos:num_requests_parked",
            "Requests of suspended processes, held back from the run queue.",
            value=len(s.parking),
        )
        depth = _gauge(
            "llmos:queue_depth", "Requests waiting, per model's queue.", "policy", "model"
        )
        for model in self.kernel.models():
            depth.add_metric([s.policy_name, model], s.depth(model))
        yield depth
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

    def _devices(self) -> Iterator[Family]:
        s = self.kernel.scheduler
        running = _gauge("llmos:num_requests_running", "Requests holding a slot.", "device")
        peak = _gauge("llmos:peak_requests_running", "Most requests ever in flight.", "device")
        slots = _gauge("llmos:device_slots", "Slots per device.", "device")
        breaker = _gauge(
            "llmos:device_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open (1 and 2 get no new requests).",
            "device",
        )
        healthy = _gauge(
            "llmos:device_healthy", "Last health check: 1 answered, 0 failed.", "device"
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

    def _system(self) -> Iterator[Family]:
        """The sampler's latest reading (every `sample_interval_s`)."""
        last = self.kernel.sysmon.latest()
        cpu = _gauge(
            "llmos:process_cpu_percent",
            "CPU use over the last sample interval, 100 = one core: the kernel's process "
            "(embedded engines included) and its children (agents, MCP servers).",
            "component",
        )
        cpu.add_metric(["kernel"], last.cpu_percent)
        cpu.add_metric(["children"], last.children_cpu_percent)
        rss = _gauge(
            "llmos:process_resident_memory_bytes",
            "Resident memory: the kernel's process and its children summed.",
            "component",
        )
        rss.add_metric(["kernel"], last.rss_bytes)
        rss.add_metric(["children"], last.children_rss_bytes)
        occupancy = _gauge(
            "llmos:device_slot_occupancy", "Share of the device's slots busy (0..1).", "device"
        )
        rate = _gauge(
            "llmos:device_tokens_per_second",
            "Tokens the device decoded per second over the last sample interval.",
            "device",
        )
        for name, row in last.devices.items():
            occupancy.add_metric([name], row["occupancy"])
            rate.add_metric([name], row["tokens_per_s"])
        yield from (cpu, rss, occupancy, rate)

    def _engines(self) -> Iterator[Family]:
        """What the engines report about themselves; a device whose engine reports
        nothing (or did not answer the last reading) has no sample here."""
        usage = _gauge(
            "llmos:kv_cache_usage_perc",
            "Share of the device's KV cache held by running sequences (0..1).",
            "device",
        )
        tokens = _gauge(
            "llmos:kv_cache_tokens", "Tokens in the KV cache of running sequences.", "device"
        )
        reusable = _gauge(
            "llmos:kv_cache_reusable_tokens",
            "Tokens idle slots keep in the KV cache for prefix reuse.",
            "device",
        )
        queries = CounterMetricFamily(
            "llmos:prefix_cache_queries",
            "Prompt tokens the engine was sent (engine counter, resets with the engine).",
            labels=["device"],
        )
        hits = CounterMetricFamily(
            "llmos:prefix_cache_hits",
            "Of those, tokens served from its prefix cache (engine counter).",
            labels=["device"],
        )
        for name, m in sorted(self.kernel.sysmon.engines.last.items()):
            if "kv_cache_usage_ratio" in m:
                usage.add_metric([name], m["kv_cache_usage_ratio"])
            if "kv_cache_tokens" in m:
                tokens.add_metric([name], m["kv_cache_tokens"])
            if "kv_cache_reusable_tokens" in m:
                reusable.add_metric([name], m["kv_cache_reusable_tokens"])
            if "prompt_tokens_total" in m and "prompt_tokens_cached_total" in m:
                cached = m["prompt_tokens_cached_total"]
                queries.add_metric([name], m["prompt_tokens_total"] + cached)
                hits.add_metric([name], cached)
        yield from (usage, tokens, reusable, queries, hits)
