"""Latency figures: the one nearest-rank ``percentile`` of the load tools and benchmarks, summaries
in milliseconds, and Prometheus' ``histogram_quantile``."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..1); NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize_ms(values: Sequence[float]) -> dict[str, float | int] | None:
    """Count and p50/p95/p99/max in milliseconds of a list of seconds; None when empty."""
    if not values:
        return None
    out: dict[str, float | int] = {"count": len(values)}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        out[f"{name}_ms"] = round(percentile(values, q) * 1000, 1)
    out["max_ms"] = round(max(values) * 1000, 1)
    return out


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket; ``buckets`` are cumulative
    (upper bound, count) pairs sorted by bound, ending with +Inf. None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bound: its value is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
