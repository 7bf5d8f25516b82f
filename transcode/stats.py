"""Transcoder counters: faults (counted, logged once per kind) and per-rendition encoder lag."""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field


class LagMeter:
    """Encoder lag samples (seconds, source frame arrival → packet out), last ``size`` kept.

    Written by one rendition's worker thread, read from anywhere (deque appends are atomic).
    """

    def __init__(self, size: int = 4096) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self.count += 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the kept samples; 0.0 when there are none."""
        samples = sorted(self._samples)
        if not samples:
            return 0.0
        index = min(len(samples) - 1, max(0, round(q / 100 * (len(samples) - 1))))
        return samples[index]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def max(self) -> float:
        return max(self._samples, default=0.0)


class FaultLog:
    """Counts faults by kind; logs the first of each kind as a warning, the rest at debug."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._log = logger
        self._prefix = prefix
        self._lock = threading.Lock()

    def record(self, kind: str, detail: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            first = self.counts[kind] == 1
        level = logging.WARNING if first else logging.DEBUG
        self._log.log(level, "%s %s: %s (further ones counted only)", self._prefix, kind, detail)

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]


@dataclass
class RenditionStats:
    """Per-rendition output counters."""

    frames_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lag: LagMeter = field(default_factory=LagMeter)

    def count_out(self, size: int, arrival: float) -> bool:
        """Count one packet of ``size`` bytes whose input arrived at ``arrival`` (wall clock);
        True for the rendition's first packet (its time to be announced)."""
        self.packets_out += 1
        self.bytes_out += size
        self.lag.add(time.time() - arrival)
        return self.packets_out == 1


@dataclass
class TranscodeStats:
    """What one stream's transcoder did; safe to read while it runs."""

    faults: FaultLog
    renditions: dict[str, RenditionStats] = field(default_factory=dict)
    units_in: int = 0
    frames_decoded: int = 0
    slots_repeated: int = 0
    frames_dropped: int = 0

    def rendition(self, name: str) -> RenditionStats:
        # Looked up before made: a RenditionStats (and its LagMeter's deque) per packet was
        # ~5 % of a passthrough stream's routing. setdefault keeps a racing thread's entry.
        stats = self.renditions.get(name)
        if stats is None:
            stats = self.renditions.setdefault(name, RenditionStats())
        return stats
