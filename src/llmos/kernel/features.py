"""What the predictor knows about a request when it is submitted: its own shape
(prompt length, max_tokens, chat or completion), the load at that moment, and
target encodings of its app, owner and session — means of what *earlier*
requests of the same app, owner or session produced.

Invariant: `History.features` reads only requests that finished before the
call, and `History.observe` is called when a request finishes; so a feature
vector never contains its own request's outcome (no target leakage), whether it
is computed live at submission or by `replay` from telemetry.

Unknown values (an app never seen, no inter-token latency yet) are NaN: the
gradient-boosted trees route missing values on their own, and `heuristic`
skips them."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Features = tuple[float, ...]

FEATURES = (
    "prompt_tokens",
    "max_tokens",
    "chat",  # 1 for a chat request, 0 for a text completion
    "inflight",  # requests submitted and not yet finished (queued or running)
    "recent_itl_s",  # moving mean of finished requests' inter-token latency
    "app_n",  # requests of the app seen finished
    "app_mean_tokens",
    "app_recent_tokens",  # mean of the app's last RECENT outputs
    "app_capped",  # fraction of the app's requests that ran into max_tokens
    "app_mean_service_s",
    "owner_mean_tokens",
    "session_n",
    "session_last_tokens",
    "session_mean_tokens",
)
IDX = {name: i for i, name in enumerate(FEATURES)}
NAN = math.nan
RECENT = 8
MAX_KEYS = 10_000  # apps, owners, sessions each: the least recently finished are forgotten
ITL_WEIGHT = 0.2  # weight of the newest request in recent_itl_s
TRAINABLE = ("stop", "length")  # finish reasons that say how long a request really was


@dataclass
class _Stat:
    """Running statistics of the requests of one app, owner or session."""

    n: int = 0
    tokens: float = 0.0
    service_s: float = 0.0
    capped: int = 0
    last: float = NAN
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, tokens: float, service_s: float, capped: bool) -> None:
        self.n += 1
        self.tokens += tokens
        self.service_s += service_s
        self.capped += capped
        self.last = tokens
        self.recent.append(tokens)

    def mean(self) -> float:
        return self.tokens / self.n if self.n else NAN


_EMPTY = _Stat()


class _Table:
    """Stats by key, bounded: the key finished least recently is dropped first."""

    def __init__(self) -> None:
        self._stats: OrderedDict[str, _Stat] = OrderedDict()

    def get(self, key: str) -> _Stat:
        return self._stats.get(key, _EMPTY)

    def add(self, key: str, tokens: float, service_s: float, capped: bool) -> None:
        stat = self._stats.get(key)
        if stat is None:
            stat = self._stats[key] = _Stat()
            if len(self._stats) > MAX_KEYS:
                self._stats.popitem(last=False)
        else:
            self._stats.move_to_end(key)
        stat.add(tokens, service_s, capped)

    def __len__(self) -> int:
        return len(self._stats)


class History:
    """What finished so far, as the features need it."""

    def __init__(self) -> None:
        self.apps = _Table()
        self.owners = _Table()
        self.sessions = _Table()
        self.overall = _Stat()
        self.itl_s = NAN

    def features(
        self,
        app: str,
        owner: str,
        session: str,
        kind: str,
        prompt_tokens: int,
        max_tokens: int,
        inflight: int,
    ) -> Features:
        a, o, s = self.apps.get(app), self.owners.get(owner), self.sessions.get(session)
        return (
            float(prompt_tokens),
            float(max_tokens),
            1.0 if kind == "chat" else 0.0,
            float(inflight),
            self.itl_s,
            float(a.n),
            a.mean(),
            sum(a.recent) / len(a.recent) if a.recent else NAN,
            a.capped / a.n if a.n else NAN,
            a.service_s / a.n if a.n else NAN,
            o.mean(),
            float(s.n),
            s.last,
            s.mean(),
        )

    def observe(
        self,
        app: str,
        owner: str,
        session: str,
        tokens: int,
        capped: bool,
        service_s: float,
        itl_s: float | None,
    ) -> None:
        t = float(tokens)
        self.apps.add(app, t, service_s, capped)
        self.owners.add(owner, t, service_s, capped)
        self.sessions.add(session, t, service_s, capped)
        self.overall.add(t, service_s, capped)
        if itl_s is not None and itl_s >= 0:
            old = self.itl_s
            self.itl_s = itl_s if math.isnan(old) else old + ITL_WEIGHT * (itl_s - old)

    def heuristic(self, feats: Features) -> float:
        """Output tokens without a model: the session's last output, else the app's
        mean, else the owner's, else everyone's; at most max_tokens."""
        cap = feats[IDX["max_tokens"]]
        for name in ("session_last_tokens", "app_mean_tokens", "owner_mean_tokens"):
            if not math.isnan(feats[IDX[name]]):
                return min(cap, feats[IDX[name]])
        overall = self.overall.mean()
        return min(cap, overall if not math.isnan(overall) else 128.0)


@dataclass
class Samples:
    """Training samples in submission order: features and both targets."""

    x: list[Features] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    max_tokens: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)


def trainable(row: dict[str, Any]) -> bool:
    """A row that says how long its request really was, and how long it held a slot."""
    return row["finish_reason"] in TRAINABLE and row.get("queue_wait_s") is not None


def service_s(row: dict[str, Any]) -> float:
    """The time a request held a slot: from its first dispatch to its end."""
    return max(0.0, float(row["total_s"]) - float(row["queue_wait_s"]))


def replay(
    rows: Iterable[dict[str, Any]], history: History | None = None
) -> tuple[Samples, History]:
    """Telemetry rows (any order) -> samples with the features each request had at
    submission. Every row counts toward `inflight` while it was queued or running;
    only trainable rows become samples and update the statistics, when they finish."""
    h = history if history is not None else History()
    out = Samples()
    events: list[tuple[float, int, int]] = []
    table = list(rows)
    for i, r in enumerate(table):
        start = float(r["created_at"])
        events.append((start, 1, i))
        events.append((start + max(0.0, float(r["total_s"])), 0, i))  # a finish sorts first
    events.sort()
    inflight = 0
    for _, submit, i in events:
        r = table[i]
        if not submit:
            inflight -= 1
            if trainable(r):
                h.observe(*_keys(r), r["output_tokens"], _capped(r), service_s(r), r.get("itl_s"))
            continue
        if trainable(r):
            app, owner, session = _keys(r)
            kind = r.get("kind") or "chat"
            out.x.append(
                h.features(app, owner, session, kind, r["prompt_tokens"], r["max_tokens"], inflight)
            )
            out.tokens.append(float(r["output_tokens"]))
            out.service_s.append(service_s(r))
            out.apps.append(app)
            out.max_tokens.append(float(r["max_tokens"]))
        inflight += 1
    return out, h


def _keys(r: dict[str, Any]) -> tuple[str, str, str]:
    return str(r.get("app") or ""), str(r["owner"]), str(r.get("session") or r["pid"])


def _capped(r: dict[str, Any]) -> bool:
    return bool(r["finish_reason"] == "length" or r["output_tokens"] >= r["max_tokens"])
