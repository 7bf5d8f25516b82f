"""Media units: what every publisher writes into a stream hub."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from fractions import Fraction

#: RTMP/FLV timestamps are milliseconds.
MILLISECONDS = Fraction(1, 1000)


class MediaKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(
        self,
        kind: MediaKind,
        codec: str,
        pts: int,
        dts: int,
        timebase: Fraction,
        keyframe: bool,
        payload: bytes,
        arrival: float,
        is_config: bool = False,
    ) -> None:
        # One unit per media message: the slots' own setters cost about half of the frozen
        # dataclass __init__ (object.__setattr__ per field).
        _set_kind(self, kind)
        _set_codec(self, codec)
        _set_pts(self, pts)
        _set_dts(self, dts)
        _set_timebase(self, timebase)
        _set_keyframe(self, keyframe)
        _set_payload(self, payload)
        _set_arrival(self, arrival)
        _set_is_config(self, is_config)

    def rescale(self, ticks: int, timebase: Fraction) -> int:
        """Convert ``ticks`` of this unit's timebase into ``timebase`` (integer, rounded down)."""
        return (
            ticks
            * self.timebase.numerator
            * timebase.denominator
            // (self.timebase.denominator * timebase.numerator)
        )


# Slot setters for MediaUnit.__init__ (the class is frozen: its own __setattr__ refuses).
(
    _set_kind,
    _set_codec,
    _set_pts,
    _set_dts,
    _set_timebase,
    _set_keyframe,
    _set_payload,
    _set_arrival,
    _set_is_config,
) = (getattr(MediaUnit, f.name).__set__ for f in fields(MediaUnit))
