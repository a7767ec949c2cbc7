"""Telemetry export with ε-differential privacy (the Laplace mechanism).

Privacy unit: one request, i.e. one telemetry row. Two telemetry tables are
neighbours when one has a row the other has not; for any set of outputs, an export's
chance of landing in it changes by at most a factor e^ε between neighbours.

What is released: for every cell of a grid fixed before any row is read — each app
(a process name, from the process table; implicit processes as one app "(implicit)",
so no owner's name leaves) times each UTC hour of the window — the request count,
the sums of prompt and output tokens, and two histograms (end-to-end latency and
time to first token) over fixed bucket edges. Empty cells are released too (as
noise), so which cells appear tells nothing of the rows.

Sensitivity: a row falls in exactly one cell. It adds 1 to the count, at most
TELEMETRY_PROMPT_CLIP / TELEMETRY_OUTPUT_CLIP to the token sums (each row's tokens
are clipped to those bounds first), and 1 to exactly one bucket of each histogram.
Cells are disjoint, so they compose in parallel; the STATS statistics compose
sequentially: ε is split equally, statistic i gets ε_i = ε / len(STATS) and Laplace
noise of scale b_i = Δ_i / ε_i on each of its values. Noise comes from numpy's
Generator seeded from `secrets` for each export; no seed comes from the client.

Each export spends its ε: exports of the same rows compose, their ε add up. Values
are noisy floats (negative ones included: clamping is allowed post-processing, but
it would bias sums), never a single row's value."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from llmos.errors import InvalidRequest
from llmos.kernel.sysdefs import Syscall
from llmos.kernel.tokens import Caller
from llmos.params import (
    MAX_EPSILON,
    MAX_EXPORT_CELLS,
    MAX_EXPORT_HOURS,
    TELEMETRY_OUTPUT_CLIP,
    TELEMETRY_PROMPT_CLIP,
)

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

HOUR = 3600
DEFAULT_HOURS = 24
IMPLICIT_APP = "(implicit)"
LATENCY_EDGES = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds
STATS = ("requests", "prompt_tokens", "output_tokens", "latency_s", "ttft_s")


@dataclass(frozen=True)
class Row:
    """What one telemetry row contributes (its app, hour and clipped values)."""

    app: str
    created_at: float
    prompt_tokens: int
    output_tokens: int
    total_s: float
    ttft_s: float | None


def buckets(with_none: bool) -> list[str]:
    """Bucket labels for LATENCY_EDGES: `<0.1`, `0.1-0.25`, …, `>=60` (and `none`)."""
    edges = [f"{e:g}" for e in LATENCY_EDGES]
    labels = [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in pairwise(edges)]
    return labels + [f">={edges[-1]}"] + (["none"] if with_none else [])


def bucket(seconds: float | None) -> int:
    """The latency bucket a value falls in; `None` (no first token) is the last one."""
    if seconds is None:
        return len(LATENCY_EDGES) + 1
    return int(np.searchsorted(LATENCY_EDGES, seconds, side="right"))


LATENCY_BUCKETS = buckets(with_none=False)
TTFT_BUCKETS = buckets(with_none=True)
# One cell as a vector: count, prompt sum, output sum, latency buckets, ttft buckets.
_SLICES = {
    "requests": slice(0, 1),
    "prompt_tokens": slice(1, 2),
    "output_tokens": slice(2, 3),
    "latency_s": slice(3, 3 + len(LATENCY_BUCKETS)),
    "ttft_s": slice(3 + len(LATENCY_BUCKETS), 3 + len(LATENCY_BUCKETS) + len(TTFT_BUCKETS)),
}
WIDTH = _SLICES["ttft_s"].stop
SENSITIVITY = {
    "requests": 1.0,
    "prompt_tokens": float(TELEMETRY_PROMPT_CLIP),
    "output_tokens": float(TELEMETRY_OUTPUT_CLIP),
    "latency_s": 1.0,  # one row, one bucket: the histogram's L1 sensitivity is 1
    "ttft_s": 1.0,
}


def scales(epsilon: float) -> dict[str, float]:
    """Each statistic's Laplace scale: its sensitivity over its share of ε."""
    share = epsilon / len(STATS)
    return {name: SENSITIVITY[name] / share for name in STATS}


def aggregate(rows: Sequence[Row], apps: Sequence[str], hours: Sequence[int]) -> np.ndarray:
    """The true (clipped) statistics of each (app, hour) cell, apps-major: a matrix of
    len(apps) * len(hours) rows of WIDTH values. Rows outside the grid count nowhere."""
    app_at = {a: i for i, a in enumerate(apps)}
    hour_at = {h: i for i, h in enumerate(hours)}
    out = np.zeros((len(apps) * len(hours), WIDTH))
    for r in rows:
        a, h = app_at.get(r.app), hour_at.get(int(r.created_at // HOUR))
        if a is None or h is None:
            continue
        cell = out[a * len(hours) + h]
        cell[0] += 1
        cell[1] += min(max(r.prompt_tokens, 0), TELEMETRY_PROMPT_CLIP)
        cell[2] += min(max(r.output_tokens, 0), TELEMETRY_OUTPUT_CLIP)
        cell[_SLICES["latency_s"].start + bucket(r.total_s)] += 1
        cell[_SLICES["ttft_s"].start + bucket(r.ttft_s)] += 1
    return out


def laplace(values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """`values` (cells x WIDTH) plus Laplace noise of each statistic's scale."""
    scale = np.empty(WIDTH)
    for name, b in scales(epsilon).items():
        scale[_SLICES[name]] = b
    noisy: np.ndarray = values + rng.laplace(0.0, 1.0, size=values.shape) * scale
    return noisy


def export(
    rows: Sequence[Row],
    apps: Sequence[str],
    hours: Sequence[int],
    epsilon: float,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """The ε-DP release of `rows` over the grid `apps` x `hours` (epoch hours)."""
    check_epsilon(epsilon)
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    noisy = laplace(aggregate(rows, apps, hours), epsilon, rng)
    share = epsilon / len(STATS)
    stats: dict[str, dict[str, Any]] = {}
    for name, b in scales(epsilon).items():
        stats[name] = {"epsilon": share, "sensitivity": SENSITIVITY[name], "scale": b}
    stats["prompt_tokens"]["clip"] = TELEMETRY_PROMPT_CLIP
    stats["output_tokens"]["clip"] = TELEMETRY_OUTPUT_CLIP
    stats["latency_s"]["buckets"] = LATENCY_BUCKETS
    stats["ttft_s"]["buckets"] = TTFT_BUCKETS
    data = []
    for i, app in enumerate(apps):
        for j, hour in enumerate(hours):
            cell = noisy[i * len(hours) + j]
            data.append(
                {
                    "app": app,
                    "hour": _iso(hour),
                    **{
                        name: _values(cell[_SLICES[name]], name in ("latency_s", "ttft_s"))
                        for name in STATS
                    },
                }
            )
    return {
        "object": "telemetry.export",
        "mechanism": "laplace",
        "epsilon": epsilon,
        "privacy_unit": "one request (one telemetry row)",
        "composition": (
            f"sequential over the {len(STATS)} statistics, epsilon split equally"
            f" ({share:g} each); parallel over the (app, hour) cells, as each request"
            " falls in exactly one"
        ),
        "note": "each export spends its epsilon: exports of the same requests add up",
        "window": {
            "start": _iso(hours[0]) if hours else None,
            "end": _iso(hours[-1] + 1) if hours else None,
            "hours": len(hours),
        },
        "statistics": stats,
        "data": data,
    }


def check_epsilon(value: object) -> float:
    if value is None:
        raise InvalidRequest(
            "epsilon is required: the privacy budget this export spends, e.g. 1.0",
            param="epsilon",
        )
    if isinstance(value, bool):
        raise InvalidRequest("epsilon must be a number", param="epsilon")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidRequest("epsilon must be a number", param="epsilon") from None
    if not isinstance(value, int | float):
        raise InvalidRequest("epsilon must be a number", param="epsilon")
    epsilon = float(value)
    if not math.isfinite(epsilon) or not 0 < epsilon <= MAX_EPSILON:
        raise InvalidRequest(
            f"epsilon must be more than 0 and at most {MAX_EPSILON:g} (smaller is more private)",
            param="epsilon",
        )
    return epsilon


def _values(values: np.ndarray, as_list: bool) -> float | list[float]:
    rounded = [round(float(v), 3) for v in values]
    return rounded if as_list else rounded[0]


def _iso(hour: int) -> str:
    return datetime.fromtimestamp(hour * HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the syscall -------------------------------------------------------------------
def _app(name: str, implicit: int) -> str:
    return IMPLICIT_APP if implicit else name


def _hours(a: dict[str, Any], now: float) -> list[int]:
    value = a.get("hours")
    value = DEFAULT_HOURS if value is None else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("hours must be an integer", param="hours")
    if not 1 <= value <= MAX_EXPORT_HOURS:
        raise InvalidRequest(f"hours must be 1..{MAX_EXPORT_HOURS}", param="hours")
    end = int(now // HOUR) + 1  # the current hour counts, as far as it has gone
    return list(range(end - value, end))


async def _telemetry_export(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    epsilon = check_epsilon(a.get("epsilon"))
    hours = _hours(a, time.time())
    db = k.store.db
    apps = sorted({_app(r[0], r[1]) for r in db.execute("SELECT name, implicit FROM processes")})
    if len(apps) * len(hours) > MAX_EXPORT_CELLS:
        raise InvalidRequest(
            f"{len(apps)} apps x {len(hours)} hours is more than {MAX_EXPORT_CELLS} cells:"
            " ask for fewer hours",
            param="hours",
        )
    rows = [
        Row(_app(r[0], r[1]), r[2], r[3], r[4], r[5], r[6])
        for r in db.execute(
            "SELECT p.name, p.implicit, t.created_at, t.prompt_tokens, t.output_tokens,"
            " t.total_s, t.ttft_s FROM telemetry t JOIN processes p ON p.pid = t.pid"
            " WHERE t.created_at >= ? AND t.created_at < ?",
            (hours[0] * HOUR, (hours[-1] + 1) * HOUR),
        )
    ]
    return export(rows, apps, hours, epsilon)


PRIVACY_SYSCALLS = (
    Syscall(
        "telemetry.export",
        _telemetry_export,
        frozenset({"admin", "viewer"}),
        "per-app, per-hour telemetry with epsilon-differential privacy (Laplace noise)",
        True,
    ),
)
