"""The auto-tuner: picks a device's settings (parallel slots, context per slot, batch)
by measuring it, and records every decision with its measured effect.

- `run` (tune.run, `llmos tune`, and once at start with autotune "start"/"online"):
  the device is held (calibrate.hold: no dispatch, its requests preempted at a token
  boundary), the current settings are measured with the calibration burst, then the
  hill-climb (tune_search.py) measures neighbours within the time budget; the best
  settings, with the context sized from telemetry, are applied if they are not worse
  than the baseline (else the old ones come back), and the device is released.
- `online_step` (autotune "online", every tune_interval_s): when the sampler's
  history says so (requests waiting while nearly every slot is busy: more slots;
  never more than half the slots busy and nobody waiting: fewer), one neighbour is
  applied, its live effect measured over the next window, and reverted if worse.

Only one tuning runs at a time (`_lock`); a second is refused (429). Decisions are
rows of the `tuning` table: settings and measures before and after, kept, why."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llmos.devices.base import Device
from llmos.errors import InvalidRequest, NotFound, Overloaded
from llmos.kernel import bgtask, calibrate, fleet
from llmos.kernel.tune_online import figures, live, propose
from llmos.kernel.tune_search import (
    Climb,
    Measure,
    Space,
    Trial,
    TuneConfig,
    context_for,
    hill_climb,
    not_worse,
)

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)

TUNE_MAX_S = 60.0  # a calibration's time budget by default
ONLINE_WINDOW_S = 60.0  # live figures before and after an online change (at most)
TELEMETRY_ROWS = 1000  # recent requests the context is sized from
DEMAND_S = 600.0  # the sampler's history consulted for the calibration burst's size

SCHEMA = """
CREATE TABLE IF NOT EXISTS tuning (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    device TEXT NOT NULL,
    "trigger" TEXT NOT NULL,
    "before" TEXT NOT NULL,
    "after" TEXT NOT NULL,
    measured_before TEXT NOT NULL,
    measured_after TEXT NOT NULL,
    kept INTEGER NOT NULL,
    reason TEXT NOT NULL,
    trials TEXT NOT NULL DEFAULT '[]'
);
"""
_JSON = ("before", "after", "measured_before", "measured_after", "trials")
_COLUMNS = ("at", "device", "trigger", *_JSON[:4], "kept", "reason", "trials")


class TuningLog:
    """Every decision, newest last. Used from the kernel's event loop only."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        values = {**row, **{k: json.dumps(row[k]) for k in _JSON}, "kept": int(row["kept"])}
        cur = self.db.execute(
            'INSERT INTO tuning (at, device, "trigger", "before", "after", measured_before,'
            " measured_after, kept, reason, trials) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(values[c] for c in _COLUMNS),
        )
        return {"id": cur.lastrowid, **row}

    def list(self, limit: int = 50, device: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE device = ?", (device,)) if device else ("", ())
        rows = self.db.execute(
            f"SELECT * FROM tuning {where} ORDER BY id DESC LIMIT ?", (*args, limit)
        ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d.update({k: json.loads(d[k]) for k in _JSON})
            d["kept"] = bool(d["kept"])
            out.append(d)
        return out


class Tuner:
    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        self.log = TuningLog(kernel.store.db)
        self.mode = kernel.settings.autotune
        self.interval_s = kernel.settings.tune_interval_s
        self.window_s = max(min(ONLINE_WINDOW_S, self.interval_s / 2), 2 * kernel.sysmon.interval_s)
        self.measure = calibrate.measure  # the calibration burst (tests may replace it)
        self.space = Space()  # the bounds of the search (the KV budget grows to the current)
        self.busy_on: str | None = None  # the device being tuned ...
        self._busy_until = 0.0  # ... until about then (a refused caller's Retry-After)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.mode != "off" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="llmos-tuner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await bgtask.cancel(task)

    async def _loop(self) -> None:
        for dev in [d for d in self.k.devices if d.tunable]:
            with _logged("calibration of " + dev.name):
                await self.run(dev.name, trigger="calibrate")
        while self.mode == "online":
            await asyncio.sleep(self.interval_s)
            for dev in [d for d in self.k.devices if d.tunable]:
                with _logged("online tuning of " + dev.name):
                    await self.online_step(dev)

    # -- what the syscalls call ----------------------------------------------------
    def device(self, name: str | None) -> Device:
        """The device to tune: the one named, else the first tunable one."""
        if name is None:
            tunable = [d for d in self.k.devices if d.tunable]
            if not tunable:
                kinds = ", ".join(f"{d.name} ({d.kind})" for d in self.k.devices)
                raise InvalidRequest(f"no device here is tunable: {kinds}", param="device")
            return tunable[0]
        for dev in self.k.devices:
            if dev.name == name:
                if not dev.tunable:
                    raise InvalidRequest(
                        f"device {name} ({dev.kind}) is not tunable: its engine's settings "
                        "are not the kernel's to change",
                        param="device",
                    )
                return dev
        names = ", ".join(d.name for d in self.k.devices)
        raise NotFound(f"no device named {name!r}; devices: {names}", param="device")

    async def run(
        self,
        name: str | None = None,
        *,
        trigger: str = "manual",
        dry_run: bool = False,
        max_seconds: float = TUNE_MAX_S,
    ) -> dict[str, Any]:
        dev = self.device(name)
        if self._lock.locked():
            raise Overloaded(
                f"a tuning of device {self.busy_on} is running; one at a time",
                param="device",
                code="tune_busy",
                retry_after=max(1, int(self._busy_until - time.monotonic())),
            )
        async with self._lock:
            self.busy_on = dev.name
            self._busy_until = time.monotonic() + max_seconds
            try:
                return await self._calibrate(dev, trigger, dry_run, max_seconds)
            finally:
                self.busy_on = None

    # -- calibration ---------------------------------------------------------------
    async def _calibrate(
        self, dev: Device, trigger: str, dry_run: bool, max_seconds: float
    ) -> dict[str, Any]:
        t0 = time.monotonic()
        before = TuneConfig.of(dev)
        async with calibrate.hold(self.k, dev):
            try:
                climb, trials, done = await self._search(dev, before, max_seconds)
                base = climb.baseline.measure
                kept = not dry_run and not_worse(done.measure, base)
                final = await self._apply(dev, done.config if kept else before)
            except BaseException:
                with _logged(f"restoring {dev.name} after a failed tuning"):
                    await self._apply(dev, before)
                raise
        fleet.slots_changed(self.k)
        why = _reason(before, done.config, base, done.measure, kept, dry_run, climb.stopped)
        row = {
            "at": time.time(),
            "device": dev.name,
            "trigger": trigger,
            "before": before.to_dict(),
            "after": (final if kept else done.config).to_dict(),
            "measured_before": base.to_dict(),
            "measured_after": done.measure.to_dict(),
            "kept": kept,
            "reason": f"{why} ({len(trials)} trials in {time.monotonic() - t0:.1f}s)",
            "trials": [t.to_dict() for t in trials],
        }
        log.info("tuning %s: %s", dev.name, row["reason"])
        return self.log.add(row)

    async def _search(
        self, dev: Device, before: TuneConfig, max_seconds: float
    ) -> tuple[Climb, list[Trial], Trial]:
        """Climb from `before`, then size the context: (the climb, all trials, the trial
        of the settings chosen, measured once more if the context changed)."""
        t0 = time.monotonic()
        n = calibrate.workload_size(dev.slots, self._demand(dev))
        burst = await calibrate.prompts(dev, n)

        async def trial(config: TuneConfig) -> Measure:
            await self._apply(dev, config)
            return await self.measure(dev, burst)

        kv = max(self.space.kv_budget, before.slots * before.context_length)
        space = dataclasses.replace(self.space, kv_budget=kv)
        budget = max_seconds - (time.monotonic() - t0)
        climb = await hill_climb(before, trial, space, budget, reserve=1)
        need = calibrate.need(self.k, dev)
        ctx = context_for(self._lengths(dev), need, before.context_length, dev.train_context)
        chosen = dataclasses.replace(climb.best.config, context_length=ctx)
        trials = list(climb.trials)
        done = next((t for t in trials if t.config == chosen), None)
        if done is None:
            began = time.monotonic()
            m = await trial(chosen)
            done = Trial(chosen, m, trials[-1].step + 1, time.monotonic() - began)
            trials.append(done)
        return climb, trials, done

    async def _apply(self, dev: Device, config: TuneConfig) -> TuneConfig:
        """Reconfigure the (held) device unless it runs these settings already; the
        context is raised to what waiting requests need. Returns what now runs."""
        need = calibrate.need(self.k, dev)
        if config.context_length < need:
            config = dataclasses.replace(config, context_length=need)
        if TuneConfig.of(dev) != config:
            await dev.reconfigure(
                slots=config.slots, context_length=config.context_length, batch=config.batch
            )
        return TuneConfig.of(dev)

    def _lengths(self, dev: Device) -> list[int]:
        rows = self.k.store.telemetry(TELEMETRY_ROWS)
        return [
            int(r["prompt_tokens"]) + int(r["output_tokens"])
            for r in rows
            if r["device"] == dev.name and r["finish_reason"] in ("stop", "length")
        ]

    def _demand(self, dev: Device) -> int:
        loads = [s.devices.get(dev.name, {}) for s in self.k.sysmon.since(DEMAND_S)]
        return int(max((d.get("busy", 0) + d.get("waiting", 0) for d in loads), default=0))

    # -- online --------------------------------------------------------------------
    async def online_step(self, dev: Device) -> dict[str, Any] | None:
        """One look at the live load; maybe one change, kept only if not worse."""
        samples = self.k.sysmon.since(self.window_s)
        proposal = propose(samples, dev)
        if proposal is None or self._lock.locked():
            return None
        config, why = proposal
        async with self._lock:
            self.busy_on = dev.name
            self._busy_until = time.monotonic() + 2 * self.window_s
            try:
                return await self._online(dev, config, why, live(samples, dev.name))
            finally:
                self.busy_on = None

    async def _online(
        self, dev: Device, config: TuneConfig, why: str, before_m: Measure
    ) -> dict[str, Any]:
        before = TuneConfig.of(dev)
        async with calibrate.hold(self.k, dev):
            after = await self._apply(dev, config)
        fleet.slots_changed(self.k)
        applied = time.time()
        await asyncio.sleep(self.window_s)
        after_m = live([s for s in self.k.sysmon.since(self.window_s) if s.t > applied], dev.name)
        kept = not_worse(after_m, before_m)
        if not kept:
            async with calibrate.hold(self.k, dev):
                await self._apply(dev, before)
            fleet.slots_changed(self.k)
        verdict = "kept" if kept else "reverted: worse than before"
        row = {
            "at": time.time(),
            "device": dev.name,
            "trigger": "online",
            "before": before.to_dict(),
            "after": after.to_dict(),
            "measured_before": before_m.to_dict(),
            "measured_after": after_m.to_dict(),
            "kept": kept,
            "reason": f"{why}; {figures(before_m, after_m)}: {verdict}",
            "trials": [],
        }
        log.info("online tuning %s: %s", dev.name, row["reason"])
        return self.log.add(row)


def _reason(
    before: TuneConfig,
    chosen: TuneConfig,
    a: Measure,
    b: Measure,
    kept: bool,
    dry_run: bool,
    stopped: str,
) -> str:
    change = "no better settings found" if chosen == before else chosen.describe()
    if dry_run:
        verdict = "dry run: nothing applied"
    elif chosen == before:
        verdict = "kept as they were"
    else:
        verdict = "applied" if kept else "worse than before: the old settings are back"
    return f"{change}; {figures(a, b)}; climb stopped at {stopped}; {verdict}"


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """A background tuning's failure is logged, not raised (it must not stop the kernel)."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s failed", what)
