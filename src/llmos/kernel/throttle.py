"""Throttling a process the anomaly detector flagged: it keeps working, slower.
It is never killed automatically.

A throttle
1. renices the process to priority 0, the lowest (the mechanism of proc.renice:
   its priority and its queued requests' through the scheduler);
2. caps it at one request in flight (its max_concurrent quota: more get 429);
3. caps its decoding with a token bucket refilled at `cap_tps` tokens a second and
   holding `burst_s` seconds of that: at every system sample the tokens it decoded
   are taken from the bucket, and while the bucket is in debt its requests are
   parked (the scheduler's parking lot, as for a suspension: a running one leaves
   its slot at the next token boundary) until the refill pays the debt — cgroup's
   `cpu.max`, in tokens. Under any policy, FIFO included, its long-run rate is at
   most `cap_tps`.
Its old priority and quota are kept (table `throttles`, so a restart keeps them
too) and `lift` restores them. A process its user suspended is left alone: the
throttle neither parks nor releases it.

Invariant: a throttle exists only for a live process; `lift` and the process's
end remove it (an ended process's parking is released by the kernel)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmos.kernel.process import Process, ProcState

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

PRIORITY = 0  # a throttled process's priority: the lowest (MAX_PRIORITY runs first)
CONCURRENT = 1  # its requests in flight at most

SCHEMA = """
CREATE TABLE IF NOT EXISTS throttles (
    pid INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    max_concurrent INTEGER,
    cap_tps REAL NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass
class Throttle:
    pid: int
    priority: int  # its priority before the throttle
    max_concurrent: int | None  # its quota before the throttle
    cap_tps: float
    at: float  # wall clock
    credit: float = 0.0  # tokens it may still decode now (negative: in debt, parked)
    tokens: int | None = None  # its tokens out at the last sample

    def to_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "cap_tps": round(self.cap_tps, 2),
            "credit": round(self.credit, 1),
            "previous_priority": self.priority,
            "previous_max_concurrent": self.max_concurrent,
            "since": self.at,
        }


class Throttles:
    def __init__(self, kernel: Kernel, burst_s: float) -> None:
        self.k = kernel
        self.burst_s = burst_s
        self.db: sqlite3.Connection = kernel.store.db
        self.db.executescript(SCHEMA)
        self.by_pid: dict[int, Throttle] = {}
        for row in self.db.execute("SELECT * FROM throttles").fetchall():
            proc = kernel.procs.find(row["pid"])
            if proc is None or not proc.state.alive:
                self.db.execute("DELETE FROM throttles WHERE pid = ?", (row["pid"],))
                continue
            cap = float(row["cap_tps"])
            self.by_pid[proc.pid] = Throttle(
                proc.pid, row["priority"], row["max_concurrent"], cap, row["at"], cap * burst_s
            )

    def apply(self, proc: Process, cap_tps: float) -> Throttle:
        """Throttle `proc` (once: a throttled process keeps its first throttle)."""
        held = self.by_pid.get(proc.pid)
        if held is not None:
            return held
        t = Throttle(
            proc.pid,
            proc.priority,
            proc.max_concurrent,
            cap_tps,
            time.time(),
            credit=cap_tps * self.burst_s,
            tokens=self.k.sysmon.tokens_out(proc.pid),  # charged from now on
        )
        self.db.execute(
            "INSERT OR REPLACE INTO throttles (pid, priority, max_concurrent, cap_tps, at)"
            " VALUES (?, ?, ?, ?, ?)",
            (t.pid, t.priority, t.max_concurrent, t.cap_tps, t.at),
        )
        self.by_pid[proc.pid] = t
        proc.priority = PRIORITY
        if proc.max_concurrent is None or proc.max_concurrent > CONCURRENT:
            proc.max_concurrent = CONCURRENT
        self.k.store.save_process(proc)
        self.k.scheduler.reprioritize(proc.pid, PRIORITY)
        return t

    def lift(self, pid: int) -> None:
        """Restore what the throttle changed and let its parked requests run."""
        t = self._drop(pid)
        proc = self.k.procs.find(pid)
        if t is None or proc is None or not proc.state.alive:
            return
        proc.priority = t.priority
        proc.max_concurrent = t.max_concurrent
        self.k.store.save_process(proc)
        self.k.scheduler.reprioritize(pid, t.priority)
        if proc.state != ProcState.SUSPENDED and pid in self.k.scheduler.parking.suspended:
            self.k.scheduler.resume(pid)

    def _drop(self, pid: int) -> Throttle | None:
        self.db.execute("DELETE FROM throttles WHERE pid = ?", (pid,))
        return self.by_pid.pop(pid, None)

    def enforce(self, dt: float) -> None:
        """One sample `dt` seconds after the last: charge, refill, park or release."""
        sched = self.k.scheduler
        for t in list(self.by_pid.values()):
            proc = self.k.procs.find(t.pid)
            if proc is None or not proc.state.alive:
                self._drop(t.pid)
                continue
            now = self.k.sysmon.tokens_out(t.pid)
            used = max(0, now - (now if t.tokens is None else t.tokens))
            t.tokens = now
            t.credit = min(t.cap_tps * self.burst_s, t.credit + t.cap_tps * dt) - used
            if proc.state == ProcState.SUSPENDED:  # its user's suspension, not ours
                continue
            parked = t.pid in sched.parking.suspended
            if t.credit < 0 and not parked:
                sched.suspend(t.pid)
            elif t.credit >= 0 and parked:
                sched.resume(t.pid)
