"""Anomaly detection: the kernel watches its processes, raises alerts and, if
configured, throttles a process that runs away.

Fed by the kernel's listeners (every finished request) and the system sampler's
(every sample, with each process's tokens/s), the detector (detector.py) keeps a
window per live process and judges it once per sample by four rules. Defaults
(`AnomalyConfig`) in brackets; k = 5, ratio = 3, and a fleet is >= 3 processes:

- token_rate: its tokens/s (the mean of its last [5] samples) is above
  max(median + k·MAD, ratio·median, [20 tokens/s]) of the processes decoding now;
  with fewer of those than a fleet, above the same bound over its own last [30]
  rates — only if it was already busy (own median >= the floor), so starting work
  after a rest is no surge;
- error_rate: of its requests that finished in the last [60 s] (at least [5]),
  the share that failed by its own doing — not killed by a user or a departed
  client, not a device failure (the circuit breaker's business) — is at least
  [50 %], and, when there is a fleet, at least max(median + k·MAD, ratio·median)
  of the fleet's shares, capped at 100 % (everyone failing alike is the system's
  trouble, not one process's);
- latency: the median inter-token latency of its requests in the window (at least
  [5]) is above max(median + k·MAD, ratio·median, [0.25 s]) of the fleet's —
  judged only against a fleet (a lone process is as slow as the machine), and
  never by end-to-end latency, which measures the size of the work asked (long
  answers beside one-word ones) and the queue, not a misbehaving process;
- loop: it sent the same prompt (the same token ids) at least [8] times within
  the window.
A rule must hold [3] consecutive samples to raise an alert (no flapping), and a
(process, rule) has at most one active alert. Statistics are medians and scaled
MADs, so the runaway does not move the yardstick; the floors keep a quiet system
and a single process silent.

An alert is a row in the alert log (alerts.py) with the figures, a WARNING in the
log, a line in `top` and the dashboard, and `llmos:alerts_active{kind}`. With
`anomaly_action = "throttle"` (the default) the process is also throttled
(throttle.py: priority 0, one request at a time, its decode rate capped at the
median of the other busy processes, at least [5 tokens/s]; a quarter of its own
rate if it runs alone) until an admin clears the alert (alert.clear) or the process
ends (a process with several throttling alerts stays throttled until the last is
cleared; a cleared process's windows start afresh: it must offend again); "alert"
only alerts, and such alerts clear themselves after [30] quiet samples.
Never throttled: the operator's own implicit process (an admin token used without
a process; as the rate limiter spares admin tokens: it is alerted on). Never
watched: the batch jobs' processes (`<owner>:jobs`), throughput work by design.
`anomaly = False` turns all of it off."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from llmos.errors import NotFound
from llmos.kernel import access
from llmos.kernel.alerts import Alert, AlertLog
from llmos.kernel.detector import AnomalyConfig, Detector, Finding, Observation
from llmos.kernel.process import Process
from llmos.kernel.request import Request
from llmos.kernel.sysmon import Sample
from llmos.kernel.throttle import Throttles
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger(__name__)


class Anomalies:
    def __init__(self, kernel: Kernel, config: AnomalyConfig | None = None) -> None:
        self.k = kernel
        self.enabled = kernel.settings.anomaly
        self.throttling = kernel.settings.anomaly_action == "throttle"
        self.config = config or AnomalyConfig()
        self.detector = Detector(self.config)
        self.alerts = AlertLog(kernel.store.db)
        self.throttles = Throttles(kernel, self.config.throttle_burst_s)
        self.samples = 0  # samples judged
        self._quiet: dict[int, int] = {}  # alert-only alert id -> samples its rule was quiet
        self._last_t: float | None = None
        if self.enabled:
            kernel.listeners.append(self.on_request)
            kernel.sysmon.listeners.append(self.on_sample)

    def configure(self, config: AnomalyConfig) -> None:
        """New rules (windows start empty)."""
        self.config = config
        self.detector = Detector(config)
        self.throttles.burst_s = config.throttle_burst_s

    # -- what is watched -------------------------------------------------------------
    @staticmethod
    def watched(proc: Process) -> bool:
        return proc.state.alive and not (proc.implicit and proc.name.endswith(":jobs"))

    def throttleable(self, proc: Process) -> bool:
        operator = proc.implicit and self.k.users.role_of(proc.owner) == "admin"
        return self.throttling and not operator

    # -- the listeners ---------------------------------------------------------------
    def on_request(self, req: Request) -> None:
        proc = self.k.procs.find(req.pid)
        if proc is not None and self.watched(proc):
            self.detector.observe(Observation.of(req))

    def on_sample(self, sample: Sample) -> None:
        dt = 0.0 if self._last_t is None else max(0.0, sample.t - self._last_t)
        self._last_t = sample.t
        alive = {p.pid: p for p in self.k.procs.list() if p.state.alive}
        for alert in list(self.alerts.active.values()):
            if alert.pid not in alive:  # its process is over: so is the alert
                self._clear(alert)
        self.throttles.enforce(dt)
        rates = {
            pid: rate
            for pid, rate in self.k.sysmon.proc_rates.items()
            if pid in alive and self.watched(alive[pid])
        }
        found = self.detector.step(time.monotonic(), rates, set(self.throttles.by_pid))
        self.samples += 1
        for f in found:
            if f.strikes >= self.config.persistence and not self.alerts.find(f.pid, f.kind):
                self._raise(alive[f.pid], f)
        self._resolve({(f.pid, f.kind) for f in found})

    # -- raising and clearing --------------------------------------------------------
    def _raise(self, proc: Process, f: Finding) -> Alert:
        action = "alert"
        message = f"process {proc.pid} ({proc.name}, owner {proc.owner}) {f.detail}"
        if proc.pid in self.throttles.by_pid:
            action = "throttle"
            message += "; it is already throttled"
        elif self.throttleable(proc):
            action = "throttle"
            cap = self._cap(proc.pid)
            self.throttles.apply(proc, cap)
            message += f"; throttled: priority 0, 1 request at a time, at most {cap:.1f} tokens/s"
        alert = self.alerts.add(proc.pid, proc.owner, f.kind, message, f.value, f.threshold, action)
        log.warning("anomaly (alert %d, %s): %s", alert.id, f.kind, message)
        return alert

    def _cap(self, pid: int) -> float:
        """A throttled process may decode as fast as the median other busy one."""
        typical = self.detector.typical_rate(besides=pid)
        if typical is None:
            typical = self.detector.rates.get(pid, 0.0) / 4
        return max(self.config.throttle_min_tps, typical)

    def _resolve(self, holding: set[tuple[int, str]]) -> None:
        """Alert-only alerts clear themselves once their rule has been quiet long enough."""
        for alert in list(self.alerts.active.values()):
            if alert.action != "alert":
                continue
            quiet = 0 if (alert.pid, alert.kind) in holding else self._quiet.get(alert.id, 0) + 1
            self._quiet[alert.id] = quiet
            if quiet >= self.config.resolve_samples:
                self._clear(alert)

    def _clear(self, alert: Alert) -> None:
        self.alerts.clear(alert)
        self._quiet.pop(alert.id, None)
        if not any(a.action == "throttle" for a in self.alerts.of(alert.pid)):
            self.throttles.lift(alert.pid)

    def clear(self, alert_id: int) -> Alert:
        """An admin's clear: the alert ends, its process's throttle is lifted (once no
        other throttling alert of it is active) and its windows start afresh."""
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise NotFound(f"no alert with id {alert_id}", param="id")
        if alert.active:
            self._clear(alert)
            self.detector.forget(alert.pid)
            log.info("alert %d (process %d, %s) cleared", alert.id, alert.pid, alert.kind)
        return alert

    # -- views -----------------------------------------------------------------------
    def _may_see(self, caller: Caller, pid: int) -> bool:
        proc = self.k.procs.find(pid)
        return caller.is_admin if proc is None else access.may_see(self.k, caller, proc)

    def visible(self, caller: Caller, active_only: bool, limit: int) -> list[dict[str, Any]]:
        """Alerts of processes the caller may see, newest first."""
        rows = self.alerts.listing(active_only, limit)
        return [a.to_dict() for a in rows if self._may_see(caller, a.pid)]

    def active_for(self, caller: Caller) -> list[dict[str, Any]]:
        """The active alerts the caller may see, newest first (for `top`)."""
        alerts = sorted(self.alerts.active.values(), key=lambda a: -a.id)
        return [a.to_dict() for a in alerts if self._may_see(caller, a.pid)]
