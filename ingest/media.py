"""Media units: what every publisher writes into a stream hub."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction

#: RTMP/FLV timestamps are milliseconds.
MILLISECONDS = Fraction(1, 1000)


class MediaKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class MediaUnit:
    """One access unit (or codec configuration record) with integer timestamps.

    ``pts``/``dts`` count ``timebase`` ticks. For ``is_config`` units the payload is the codec
    configuration record (avcC, hvcC, av1C, AudioSpecificConfig); otherwise it is one frame:
    length-prefixed NAL units for H.264/HEVC, a raw AAC frame, an OBU sequence for AV1.
    ``arrival`` is the wall-clock time (``time.time()``) at which ingest received the unit.
    """

    kind: MediaKind
    codec: str
    pts: int
    dts: int
    timebase: Fraction
    keyframe: bool
    payload: bytes
    arrival: float
    is_config: bool = False

    def rescale(self, ticks: int, timebase: Fraction) -> int:
        """Convert ``ticks`` of this unit's timebase into ``timebase`` (integer, rounded down)."""
        return (
            ticks
            * self.timebase.numerator
            * timebase.denominator
            // (self.timebase.denominator * timebase.numerator)
        )
