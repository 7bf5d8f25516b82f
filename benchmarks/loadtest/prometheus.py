"""What the load test reads from a target's Prometheus ``/metrics``, and the change between
two scrapes."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.loadtest.stats import histogram_quantile

PROCESS_CPU = "process_cpu_seconds_total"
HUB_DROPPED = "shopcast_hub_dropped_frames_total"
PART_LATENESS = "shopcast_part_publish_lateness_seconds"
PARTS_PUBLISHED = "shopcast_parts_total"


@dataclass
class MetricsSnapshot:
    """The figures the load test reads from a target's Prometheus ``/metrics``."""

    at: float
    cpu_seconds: float | None = None
    dropped: dict[str, float] = field(default_factory=dict)  # per stream
    lateness: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)
    parts: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, at: float) -> MetricsSnapshot:
        from prometheus_client.parser import text_string_to_metric_families

        snap = cls(at)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = s.labels
                if s.name == PROCESS_CPU:
                    snap.cpu_seconds = s.value
                elif s.name == HUB_DROPPED:
                    snap.dropped[labels.get("stream", "")] = s.value
                elif s.name == PART_LATENESS + "_bucket":
                    key = (labels.get("stream", ""), labels.get("rendition", ""))
                    snap.lateness.setdefault(key, {})[float(labels["le"])] = s.value
                elif s.name == PARTS_PUBLISHED:
                    snap.parts[(labels.get("stream", ""), labels.get("rendition", ""))] = s.value
        return snap


def _delta(end: float, start: float | None) -> float:
    # A per-session counter starts over when its publisher reconnects: then all of it is new.
    return end if start is None or end < start else end - start


def metrics_delta(
    start: MetricsSnapshot, end: MetricsSnapshot, streams: Iterable[str] | None = None
) -> dict[str, Any]:
    """Target process CPU, hub drops, parts and part lateness between two scrapes; ``streams``
    limits the per-stream figures (None: every stream)."""
    wanted = None if streams is None else set(streams)

    def mine(stream: str) -> bool:
        return wanted is None or stream in wanted

    wall = end.at - start.at
    out: dict[str, Any] = {"wall_seconds": round(wall, 2)}
    if start.cpu_seconds is not None and end.cpu_seconds is not None and wall > 0:
        cpu = end.cpu_seconds - start.cpu_seconds
        out["cpu_seconds"] = round(cpu, 2)
        out["cpu_cores"] = round(cpu / wall, 3)
    dropped = [_delta(v, start.dropped.get(s)) for s, v in end.dropped.items() if mine(s)]
    out["hub_dropped_frames"] = int(sum(dropped))
    out["parts_published"] = int(
        sum(_delta(v, start.parts.get(k)) for k, v in end.parts.items() if mine(k[0]))
    )
    merged: dict[float, float] = collections.defaultdict(float)
    for key, buckets in end.lateness.items():
        if not mine(key[0]):
            continue
        before = start.lateness.get(key, {})
        for bound, count in buckets.items():
            merged[bound] += count - before.get(bound, 0.0)
    cumulative = sorted(merged.items())
    if cumulative and cumulative[-1][1] > 0:
        out["part_lateness"] = {
            "count": int(cumulative[-1][1]),
            **{
                f"{name}_ms": round((histogram_quantile(cumulative, q) or 0.0) * 1000, 1)
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
            "source": f"{PART_LATENESS} histogram, interpolated within buckets",
        }
    return out
