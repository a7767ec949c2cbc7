"""One way to read a percentile off measured values, for every report the kernel
makes (the sampler's history, `llmos ask`'s facts, tuning measurements, the
autoscaler's TTFT target)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (1..99, interpolated between the values); None for none."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    return statistics.quantiles(data, n=100, method="inclusive")[max(1, min(99, round(q))) - 1]
