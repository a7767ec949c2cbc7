"""The anomaly rules: robust statistics over per-process windows, no kernel inside.

The detector is fed plain observations (one per finished request) and, once per
system sample, every watched process's token rate; `step` judges each process
by four rules and returns what holds now, with how many consecutive samples it
has held (the caller raises an alert once that reaches `persistence`).
anomaly.py wires it to the kernel and says what the rules are for.

Robust statistics: a fleet's centre is its median and its spread the median
absolute deviation scaled to a standard deviation (x 1.4826), so one runaway
cannot drag the yardstick it is measured with. Every relative threshold is
`max(median + k * MAD, ratio * median, floor)`: the MAD term tolerates a spread
fleet, the ratio a tight one (MAD ~ 0), the floor a quiet system."""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmos.errors import DeviceError, Killed, Unavailable
from llmos.kernel.request import Request

MAD_SCALE = 1.4826  # MAD x this estimates the standard deviation of normal data
SEEN_MAX = 2048  # a process's finished requests kept (within the window), newest
KINDS = ("token_rate", "error_rate", "latency", "loop")

# (pid, kind) -> (value, threshold, detail) of the rules that hold in one step
Found = dict[tuple[int, str], tuple[float, float, str]]


@dataclass(frozen=True)
class AnomalyConfig:
    """The rules' knobs; the defaults are documented in anomaly.py."""

    window_s: float = 60.0  # errors, latency and loops look this far back
    persistence: int = 3  # consecutive samples a rule must hold before an alert
    k_mad: float = 5.0  # a threshold is at least median + k_mad * MAD ...
    ratio: float = 3.0  # ... and at least ratio * median ...
    min_fleet: int = 3  # ... of at least this many comparable processes
    rate_samples: int = 5  # a token rate is the mean of this many samples
    baseline_samples: int = 30  # a process's own baseline: its earlier mean rates
    baseline_min: int = 10  # fewer than this: no baseline yet
    rate_floor_tps: float = 20.0  # a token rate below this is never anomalous
    loop_count: int = 8  # the same prompt this often within window_s is a loop
    min_requests: int = 5  # the error and latency rules need this many requests
    error_floor: float = 0.5  # an error ratio below this is never anomalous
    itl_floor_s: float = 0.25  # a median inter-token latency below this never is
    throttle_min_tps: float = 5.0  # a throttled process may always decode this fast
    throttle_burst_s: float = 2.0  # its token bucket holds this many seconds of its cap
    resolve_samples: int = 30  # quiet samples after which an alert-only alert clears


@dataclass(frozen=True)
class Observation:
    """What the rules keep of one finished request."""

    pid: int
    at: float  # monotonic, when it finished
    failed: bool  # by its own doing: not killed by a user, not a device failure
    e2e_s: float | None  # successful requests only
    itl_s: float | None
    prompt: int  # hash of its prompt's token ids
    prompt_tokens: int

    @classmethod
    def of(cls, req: Request) -> Observation:
        ok = req.finish_reason in ("stop", "length")
        # A kill (by a user, a client gone, shutdown) or a device's failure is not
        # the process misbehaving; the breaker watches devices.
        blameless = isinstance(req.error, Killed | DeviceError | Unavailable)
        end = req.finished_at if req.finished_at is not None else req.created_at
        return cls(
            pid=req.pid,
            at=end,
            failed=not ok and not blameless,
            e2e_s=end - req.created_at if ok else None,
            itl_s=req.itl_s if ok else None,
            prompt=hash(tuple(req.snapshot.prompt_ids)),
            prompt_tokens=req.prompt_tokens,
        )


@dataclass(frozen=True)
class Finding:
    """A rule that holds for a process in this sample."""

    pid: int
    kind: str  # one of KINDS
    value: float
    threshold: float
    detail: str  # a sentence with the figures, without the process's name
    strikes: int  # consecutive samples it has held, this one included


@dataclass
class _Track:
    rates: deque[float]  # its last per-sample token rates
    means: deque[float]  # its earlier smoothed rates (the own baseline)
    seen: deque[Observation] = field(default_factory=lambda: deque(maxlen=SEEN_MAX))
    strikes: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Spread:
    median: float
    mad: float  # scaled

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        xs = list(values)
        med = statistics.median(xs)
        return cls(med, statistics.median(abs(x - med) for x in xs) * MAD_SCALE)

    def threshold(self, k: float, ratio: float, floor: float) -> float:
        return max(self.median + k * self.mad, ratio * self.median, floor)


class Detector:
    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self.tracks: dict[int, _Track] = {}
        self.rates: dict[int, float] = {}  # smoothed token rates at the last step

    def _track(self, pid: int) -> _Track:
        track = self.tracks.get(pid)
        if track is None:
            c = self.config
            track = self.tracks[pid] = _Track(
                deque(maxlen=c.rate_samples), deque(maxlen=c.baseline_samples + c.persistence)
            )
        return track

    def observe(self, obs: Observation) -> None:
        self._track(obs.pid).seen.append(obs)

    def forget(self, pid: int) -> None:
        """Start `pid` afresh (its alert was cleared: it must offend again)."""
        self.tracks.pop(pid, None)

    def typical_rate(self, besides: int) -> float | None:
        """The median smoothed rate of the other processes decoding now."""
        others = [x for pid, x in self.rates.items() if pid != besides and x > 0]
        return statistics.median(others) if others else None

    def step(self, now: float, rates: dict[int, float], exempt: set[int]) -> list[Finding]:
        """One sample: `rates` holds every watched process's tokens/s (processes
        not in it are forgotten); processes in `exempt` (throttled: their rate and
        latency are the throttle's doing) are judged only for errors and loops."""
        for pid in [p for p in self.tracks if p not in rates]:
            del self.tracks[pid]
        for pid, rate in rates.items():
            track = self._track(pid)
            track.rates.append(rate)
            while track.seen and track.seen[0].at < now - self.config.window_s:
                track.seen.popleft()
        self.rates = {pid: statistics.fmean(t.rates) for pid, t in self.tracks.items()}
        found: Found = {}
        self._token_rate(exempt, found)
        self._errors(found)
        self._latency(exempt, found)
        self._loops(found)
        out = []
        for pid, track in self.tracks.items():
            for kind in KINDS:
                hit = found.get((pid, kind))
                track.strikes[kind] = track.strikes[kind] + 1 if hit else 0
                if hit:
                    out.append(Finding(pid, kind, *hit, strikes=track.strikes[kind]))
            track.means.append(self.rates[pid])
        return out

    # -- the rules -------------------------------------------------------------------
    def _token_rate(self, exempt: set[int], found: Found) -> None:
        c = self.config
        active = {p: x for p, x in self.rates.items() if x > 0 and p not in exempt}
        if len(active) >= c.min_fleet:
            fleet = Spread.of(active.values())
            limit = fleet.threshold(c.k_mad, c.ratio, c.rate_floor_tps)
            for pid, x in active.items():
                if x > limit:
                    found[pid, "token_rate"] = (
                        x,
                        limit,
                        f"decodes {x:.1f} tokens/s, above the limit of {limit:.1f} "
                        f"(median of {len(active)} active processes: {fleet.median:.1f} tokens/s)",
                    )
            return
        for pid, x in active.items():  # too few to compare: against its own past
            earlier = list(self.tracks[pid].means)[: -c.persistence or None]
            if len(earlier) < c.baseline_min:
                continue
            own = Spread.of(earlier)
            if own.median < c.rate_floor_tps:  # it was idle: starting work is not a surge
                continue
            limit = own.threshold(c.k_mad, c.ratio, c.rate_floor_tps)
            if x > limit:
                found[pid, "token_rate"] = (
                    x,
                    limit,
                    f"decodes {x:.1f} tokens/s, above the limit of {limit:.1f} "
                    f"(its own recent median: {own.median:.1f} tokens/s)",
                )

    def _errors(self, found: Found) -> None:
        c = self.config
        counts = {
            pid: (sum(o.failed for o in t.seen), len(t.seen))
            for pid, t in self.tracks.items()
            if len(t.seen) >= c.min_requests
        }
        ratios = {pid: failed / n for pid, (failed, n) in counts.items()}
        limit = c.error_floor
        if len(ratios) >= c.min_fleet:  # many failing alike: the system's trouble
            fleet = Spread.of(ratios.values())
            limit = min(1.0, fleet.threshold(c.k_mad, c.ratio, c.error_floor))
        for pid, ratio in ratios.items():
            if ratio > 0 and ratio >= limit:
                failed, n = counts[pid]
                found[pid, "error_rate"] = (
                    ratio,
                    limit,
                    f"{failed} of its last {n} requests failed in {c.window_s:g} s "
                    f"({ratio:.0%}; the limit is {limit:.0%})",
                )

    def _latency(self, exempt: set[int], found: Found) -> None:
        """Per-token latency only: end-to-end latency measures the size of the work
        (a chat app's long answers beside a classifier's one word) and the queue,
        which are everyone's, not one process's misbehaviour."""
        c = self.config
        itl: dict[int, float] = {}
        for pid, t in self.tracks.items():
            gaps = [o.itl_s for o in t.seen if o.itl_s is not None]
            if pid not in exempt and len(gaps) >= c.min_requests:
                itl[pid] = statistics.median(gaps)
        if len(itl) < c.min_fleet:  # latency is only ever judged against others
            return
        fleet = Spread.of(itl.values())
        limit = fleet.threshold(c.k_mad, c.ratio, c.itl_floor_s)
        for pid, x in itl.items():
            if x > limit and (pid, "latency") not in found:
                found[pid, "latency"] = (
                    x,
                    limit,
                    f"has a median inter-token latency of {x:.2f} s, above the limit of "
                    f"{limit:.2f} s (median of {len(itl)} processes: {fleet.median:.2f} s)",
                )

    def _loops(self, found: Found) -> None:
        c = self.config
        for pid, t in self.tracks.items():
            if len(t.seen) < c.loop_count:
                continue
            prompt, count = Counter(o.prompt for o in t.seen).most_common(1)[0]
            if count >= c.loop_count:
                size = next(o.prompt_tokens for o in t.seen if o.prompt == prompt)
                found[pid, "loop"] = (
                    float(count),
                    float(c.loop_count),
                    f"sent the same prompt ({size} tokens) {count} times in {c.window_s:g} s "
                    f"(the limit is {c.loop_count})",
                )
