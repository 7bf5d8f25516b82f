"""How the live packager cuts and keeps media: part and segment targets, window, reconnect wait."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class PackagerConfig:
    #: 1/3 s rounded up to the millisecond: sources with millisecond timestamps (33/34 ms
    #: frames) then still fit ten frames per part, like the re-encoded rungs, so part
    #: boundaries line up on every rendition.
    part_target: Fraction = Fraction(334, 1000)
    segment_duration: Fraction = Fraction(2)
    window_segments: int = 10  # A: ≥ 6 segments; S 6.2.5.1 needs > CAN-SKIP-UNTIL to skip
    reconnect_window: float = 10.0

    @property
    def target_duration(self) -> int:
        # S 4.4.3.1: EXTINF rounded must not exceed it; segments are cut at the target.
        return max(1, round(self.segment_duration))
