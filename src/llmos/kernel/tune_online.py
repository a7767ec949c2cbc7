"""Auto-tuning online: what the live load asks for, and a window of the sampler's
history as a measurement. The rules (used by Tuner.online_step):

- more slots (x2, within MAX_SLOTS) when requests waited on average at least one at a
  time while at least 90% of the slots were busy;
- fewer slots (/2) when nobody waited and at most half the slots were ever busy;
- otherwise nothing. The change is kept if the next window's figures are not worse
  (tune_search.not_worse); a window's figures are the means of the sampler's
  per-interval ones (the load itself may change between two windows: the decision
  and both windows' figures are recorded, so a reader can tell).
"""

from __future__ import annotations

import dataclasses
import statistics

from llmos.devices.base import Device
from llmos.kernel.sysmon import Sample
from llmos.kernel.tune_search import MAX_SLOTS, Measure, TuneConfig


def propose(samples: list[Sample], dev: Device) -> tuple[TuneConfig, str] | None:
    """The neighbour the live load asks for, with why; None if it asks for nothing."""
    loads = [s.devices[dev.name] for s in samples if dev.name in s.devices]
    if len(loads) < 2:
        return None
    occupancy = statistics.fmean(d["occupancy"] for d in loads)
    waiting = statistics.fmean(d["waiting"] for d in loads)
    now = TuneConfig.of(dev)
    if waiting >= 1 and occupancy >= 0.9 and dev.slots * 2 <= MAX_SLOTS:
        why = f"{waiting:.1f} requests waiting on average with {occupancy:.0%} of slots busy"
        return dataclasses.replace(now, slots=dev.slots * 2), why + ": more slots"
    busiest = max(d["busy"] for d in loads)
    if dev.slots > 1 and busiest * 2 <= dev.slots and max(d["waiting"] for d in loads) == 0:
        why = f"at most {busiest:g} of {dev.slots} slots busy, none waiting"
        return dataclasses.replace(now, slots=dev.slots // 2), why + ": fewer slots"
    return None


def live(samples: list[Sample], name: str) -> Measure:
    """A window of the sampler's history as a Measure (means of its per-interval figures)."""
    rates = [s.devices[name]["tokens_per_s"] for s in samples if name in s.devices]

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.fmean(known) if known else None

    interval = samples[1].t - samples[0].t if len(samples) > 1 else 0.0
    seconds = interval * len(samples)
    rate = statistics.fmean(rates) if rates else 0.0
    return Measure(
        tokens_per_s=rate,
        p50_s=mean([s.e2e_p50_s for s in samples]),
        p95_s=mean([s.e2e_p95_s for s in samples]),
        ttft_p50_s=mean([s.ttft_p50_s for s in samples]),
        requests=sum(s.finished for s in samples),
        tokens=round(rate * seconds),
        seconds=seconds,
    )


def figures(a: Measure, b: Measure) -> str:
    p95 = "-" if a.p95_s is None or b.p95_s is None else f"{a.p95_s:.2f}->{b.p95_s:.2f}s"
    return f"{a.tokens_per_s:.1f}->{b.tokens_per_s:.1f} tok/s, p95 {p95}"
