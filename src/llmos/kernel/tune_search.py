"""Auto-tuning, the search: which device settings to try, and which to keep.

A setting is a `TuneConfig` (parallel slots, context per slot, batch); a measurement
is a `Measure` (throughput, latency). The rules, written once here:

- Objective: the most throughput (tokens/s) whose p95 latency stays within
  LATENCY_SLACK x the p95 of the settings the device ran before (the baseline).
- Moving: the hill-climb moves to a neighbour only if it meets the latency bound and
  gives at least MIN_GAIN more throughput than the best so far (on a shared CPU the
  noise between two runs of one workload is a few percent); from there it measures
  that one's neighbours, until none is better (a local optimum), there are none left
  (the bounds), or the time budget would be overrun.
- Keeping: settings are kept only if their measurement is not worse than the
  baseline: throughput at least (1 - MIN_GAIN) x the baseline's, p95 within the bound.
- Space: slots in 1..MAX_SLOTS stepping x2 and /2 (powers of two around the current
  value), batch among BATCHES (one step smaller or larger; from the engine's default,
  the largest), and slots x context within the KV budget.
- Context per slot is sized from telemetry, not measured (it is memory, not speed):
  the smallest power of two >= CONTEXT_HEADROOM x the p99 of prompt + output tokens
  of the device's recent requests, within [MIN_CONTEXT, the model's training
  context]; never below what a waiting request needs; unchanged while fewer than
  MIN_ROWS requests have been seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llmos.devices.base import Device
from llmos.kernel.percentile import percentile

MAX_SLOTS = 16
BATCHES = (128, 256, 512)
LATENCY_SLACK = 1.25  # a candidate's p95 may be at most this times the baseline's
MIN_GAIN = 0.05  # a move needs this much more throughput; keeping, no more than this less
MIN_CONTEXT = 512
CONTEXT_HEADROOM = 1.25
MIN_ROWS = 20  # finished requests seen before the context is sized from them
KV_BUDGET_TOKENS = 32768  # slots x context the tuner may reach (or the current, if larger)


@dataclass(frozen=True)
class TuneConfig:
    slots: int
    context_length: int  # tokens per slot
    batch: int | None  # None: the engine's default

    @classmethod
    def of(cls, dev: Device) -> TuneConfig:
        return cls(dev.slots, dev.context_length, dev.batch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        batch = "default" if self.batch is None else str(self.batch)
        return f"slots {self.slots}, context {self.context_length}, batch {batch}"


@dataclass(frozen=True)
class Measure:
    """One workload's figures: calibration (a fixed burst through the device) or a
    live window (the sampler's history). Latencies count from the request's arrival."""

    tokens_per_s: float
    p50_s: float | None
    p95_s: float | None
    ttft_p50_s: float | None
    requests: int
    tokens: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def within_latency(m: Measure, baseline: Measure) -> bool:
    if m.p95_s is None or baseline.p95_s is None:
        return True
    return m.p95_s <= LATENCY_SLACK * baseline.p95_s


def better(m: Measure, best: Measure, baseline: Measure) -> bool:
    """Worth moving to: clearly more throughput, latency within the bound."""
    return m.tokens_per_s >= best.tokens_per_s * (1 + MIN_GAIN) and within_latency(m, baseline)


def not_worse(m: Measure, baseline: Measure) -> bool:
    """Worth keeping: throughput within the noise of the baseline's or better."""
    return m.tokens_per_s >= baseline.tokens_per_s * (1 - MIN_GAIN) and within_latency(m, baseline)


@dataclass(frozen=True)
class Space:
    """The settings the tuner may try around a point."""

    kv_budget: int = KV_BUDGET_TOKENS
    max_slots: int = MAX_SLOTS
    batches: tuple[int, ...] = BATCHES

    def allows(self, c: TuneConfig) -> bool:
        return 1 <= c.slots <= self.max_slots and c.slots * c.context_length <= self.kv_budget

    def neighbours(self, c: TuneConfig) -> list[TuneConfig]:
        out = [dataclasses.replace(c, slots=s) for s in (c.slots * 2, c.slots // 2)]
        out += [dataclasses.replace(c, batch=b) for b in self._batch_steps(c.batch)]
        return [n for n in out if self.allows(n)]

    def _batch_steps(self, batch: int | None) -> list[int]:
        ordered = sorted(self.batches)
        if batch is None:
            return [ordered[-1]]
        if batch not in ordered:
            return [min(ordered, key=lambda b: abs(b - batch))]
        i = ordered.index(batch)
        return [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)]


@dataclass(frozen=True)
class Trial:
    config: TuneConfig
    measure: Measure
    step: int  # 0: the baseline; n: measured as a neighbour at the climb's n-th step
    seconds: float  # the trial's cost, settings change included

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "measure": self.measure.to_dict(),
            "step": self.step,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Climb:
    baseline: Trial
    best: Trial
    trials: list[Trial] = field(default_factory=list)
    stopped: str = "local optimum"  # or "bounds", "time budget"


Measurer = Callable[[TuneConfig], Awaitable[Measure]]


async def hill_climb(
    start: TuneConfig,
    measure: Measurer,
    space: Space,
    budget_s: float,
    reserve: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> Climb:
    """Steepest-ascent hill-climbing from `start` (always measured: the baseline).
    A trial starts only if it should end within `budget_s`, keeping room for
    `reserve` more trials after the climb (estimated as long as the longest so far),
    and is abandoned if it would overrun."""
    t0 = clock()
    seen: dict[TuneConfig, Trial] = {}
    longest = 0.0

    async def trial(config: TuneConfig, step: int) -> Trial:
        nonlocal longest
        began = clock()
        m = await measure(config)
        done = Trial(config, m, step, clock() - began)
        longest = max(longest, done.seconds)
        seen[config] = done
        return done

    base = await trial(start, 0)
    climb = Climb(baseline=base, best=base, trials=[base])
    step = 0
    while True:
        step += 1
        fresh = [n for n in space.neighbours(climb.best.config) if n not in seen]
        if not fresh:
            climb.stopped = "local optimum" if space.neighbours(climb.best.config) else "bounds"
            return climb
        moved: Trial | None = None
        for config in fresh:
            left = budget_s - (clock() - t0) - longest * reserve
            if left < longest:  # it would not end in time
                climb.stopped = "time budget"
                break
            try:  # nor may it overrun (a machine busy with other work is slower)
                async with asyncio.timeout(left):  # not wait_for: see bgtask.py
                    t = await trial(config, step)
            except TimeoutError:
                climb.stopped = "time budget"
                break
            climb.trials.append(t)
            if better(t.measure, (moved or climb.best).measure, base.measure):
                moved = t
        if moved is None:
            if climb.stopped != "time budget":
                climb.stopped = "local optimum"
            return climb
        climb.best = moved
        if climb.stopped == "time budget":
            return climb


def context_for(lengths: list[int], need: int, current: int, train: int | None) -> int:
    """Tokens per slot: see the module's rules. `lengths` are recent requests' prompt +
    output tokens; `need` the most any waiting request needs."""
    if len(lengths) < MIN_ROWS:
        return max(current, need)
    p99 = percentile(lengths, 99) or 0.0
    size = 1 << max(0, math.ceil(math.log2(max(1.0, CONTEXT_HEADROOM * p99))))
    top = train if train is not None else max(current, MIN_CONTEXT)
    size = min(max(size, MIN_CONTEXT), max(top, MIN_CONTEXT))
    return max(size, need)
