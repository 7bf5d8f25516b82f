"""Output timing: source timestamps → one repaired timeline, constant-rate video slots, audio
sample counts. Pure; the pipelines call these per unit or frame.

All times here are exact ``Fraction`` seconds, so an hour of 29.97 fps or 44.1 kHz accumulates no
rounding drift: every output timestamp is computed from an absolute source time, never summed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from ingest.media import MediaKind, MediaUnit
from transcode.output import VIDEO_TIMESCALE


def round_half_up(value: Fraction) -> int:
    """Nearest integer, halves up (``round`` on a Fraction rounds halves to even)."""
    return (value.numerator * 2 + value.denominator) // (value.denominator * 2)


def to_ticks(seconds: Fraction, timescale: int = VIDEO_TIMESCALE) -> int:
    """Seconds as ticks of ``timescale`` (halves up)."""
    # round_half_up(seconds * timescale) on the integers: no Fraction built (per packet).
    n, d = seconds.numerator, seconds.denominator
    return (n * timescale * 2 + d) // (d * 2)


@dataclass(slots=True)
class _TrackState:
    last_raw: Fraction | None = None
    offset: Fraction = Fraction(0)
    step: Fraction = Fraction(1, 30)
    # The same in integer ticks of 1/den s (the track's timebase), kept by StreamTimeline's
    # fast path; 0 when not in use. last_raw and step are stale while it is.
    den: int = 0
    last_n: int = 0
    step_n: int = 0  # 0: ``step`` is current
    base: Fraction = Fraction(0)  # offset - origin
    # ``base`` as integers, and ``max_gap`` in ticks (rounded down: deltas are whole ticks).
    base_n: int = 0
    base_d: int = 1
    max_delta: int = 0


@dataclass(slots=True, eq=False)
class RepairedTime:
    """A unit's time on the output timeline: seconds since the stream's origin.

    Kept exact as integers over one denominator (``pts_n / den``, ``dts_n / den``, not
    reduced): the ``Fraction`` of each is made only when asked for, the ticks without one.
    """

    pts_n: int
    dts_n: int
    den: int  # > 0
    jumped: bool

    @classmethod
    def of(cls, pts: Fraction, dts: Fraction, jumped: bool) -> RepairedTime:
        return cls(
            pts.numerator * dts.denominator,
            dts.numerator * pts.denominator,
            pts.denominator * dts.denominator,
            jumped,
        )

    @property
    def pts(self) -> Fraction:
        return Fraction(self.pts_n, self.den)

    @property
    def dts(self) -> Fraction:
        return Fraction(self.dts_n, self.den)

    def pts_ticks(self, timescale: int = VIDEO_TIMESCALE) -> int:
        """``to_ticks(self.pts, timescale)`` without the Fraction (halves up)."""
        return (self.pts_n * timescale * 2 + self.den) // (self.den * 2)

    def dts_ticks(self, timescale: int = VIDEO_TIMESCALE) -> int:
        """``to_ticks(self.dts, timescale)`` without the Fraction (halves up)."""
        return (self.dts_n * timescale * 2 + self.den) // (self.den * 2)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RepairedTime):
            return NotImplemented
        return (
            self.pts_n * other.den == other.pts_n * self.den
            and self.dts_n * other.den == other.dts_n * self.den
            and self.jumped == other.jumped
        )

    __hash__ = None  # type: ignore[assignment]  # as the mutable dataclass it was

    def __repr__(self) -> str:
        return f"RepairedTime(pts={self.pts!r}, dts={self.dts!r}, jumped={self.jumped})"


@dataclass(slots=True)
class StreamTimeline:
    """Maps source timestamps of every track onto one timeline that starts at 0.

    The origin is the DTS of the first media unit of any track, so both tracks keep their
    relative timing (A/V sync is the publisher's). A DTS going backwards (a reset, a 32-bit wrap)
    or forward by more than ``max_gap`` seconds is a jump: that track is rebased to continue one
    unit after its last one. When the other track jumps by about the same amount (within 1 s), it
    reuses the same shift, so a publisher's clock reset moves audio and video together.
    """

    max_gap: Fraction = Fraction(5)  # read when a track starts (or restarts) its fast path
    origin: Fraction | None = None
    jumps: int = 0
    _tracks: dict[MediaKind, _TrackState] = field(default_factory=dict)
    _last_shift: Fraction | None = None

    def output_time(self, source: Fraction, kind: MediaKind = MediaKind.VIDEO) -> Fraction | None:
        """Where a source time (seconds) of track ``kind`` lands on the output timeline.

        ``None`` before the first unit. Used to stamp tags given as source timestamps.
        """
        if self.origin is None:
            return None
        track = self._tracks.get(kind) or self._tracks.get(MediaKind.AUDIO) or _TrackState()
        return source + track.offset - self.origin

    def place(self, unit: MediaUnit) -> RepairedTime:
        timebase = unit.timebase
        track = self._tracks.get(unit.kind)
        if track is not None and track.den == timebase.denominator and timebase.numerator == 1:
            # Fast path (every unit but a track's first and its jumps): the same exact times,
            # from integer ticks, no Fraction made; Fraction arithmetic was a quarter of the
            # event loop.
            dts = unit.dts
            delta = dts - track.last_n
            if 0 <= delta <= track.max_delta:
                if delta > 0:
                    track.step_n = delta
                track.last_n = dts
                bd = track.base_d
                shift = track.base_n * track.den
                return RepairedTime(unit.pts * bd + shift, dts * bd + shift, track.den * bd, False)
        if track is not None and track.den:
            track.last_raw = Fraction(track.last_n, track.den)
            if track.step_n:
                track.step = Fraction(track.step_n, track.den)
            track.den = 0
        return self._place(unit)

    def _place(self, unit: MediaUnit) -> RepairedTime:
        """The reference: Fraction arithmetic throughout; leaves the fast path's state set."""
        raw_dts = unit.dts * unit.timebase
        raw_pts = unit.pts * unit.timebase
        if self.origin is None:
            self.origin = raw_dts
        track = self._tracks.setdefault(unit.kind, _TrackState())
        jumped = False
        if track.last_raw is not None:
            delta = raw_dts - track.last_raw
            if delta < 0 or delta > self.max_gap:
                jumped = True
                expected = track.last_raw + track.offset + track.step
                shift = (expected - raw_dts) - track.offset
                if self._last_shift is not None and abs(shift - self._last_shift) <= 1:
                    shift = self._last_shift
                self._last_shift = shift
                track.offset += shift
                self.jumps += 1
            elif delta > 0:
                track.step = delta
        track.last_raw = raw_dts
        base = track.offset - self.origin
        if unit.timebase.numerator == 1:
            den = unit.timebase.denominator
            track.den, track.last_n, track.step_n = den, unit.dts, 0
            track.base, track.base_n, track.base_d = base, base.numerator, base.denominator
            # delta / den <= max_gap, for whole ticks: delta <= floor(max_gap * den).
            track.max_delta = self.max_gap.numerator * den // self.max_gap.denominator
        return RepairedTime.of(raw_pts + base, raw_dts + base, jumped)


@dataclass(slots=True)
class SlotPlacement:
    """Output slots a source frame produces: ``repeats`` re-show the previous frame first."""

    repeats: range
    slot: int


@dataclass(slots=True)
class FrameSlotPicker:
    """Constant frame rate from any source timing (the ffmpeg ``fps`` filter, first-wins).

    Output slot ``n`` is at ``n / fps`` seconds. A source frame takes the slot nearest its time;
    slots skipped since the last frame repeat that frame (VFR gaps, lost frames); a frame whose
    slot is already taken is dropped (60 → 30 fps keeps every other frame). Nothing waits for a
    later frame, so picking adds no latency. Gaps longer than ``max_repeat`` slots are not filled.
    """

    fps: Fraction
    max_repeat: int = 150
    next_slot: int | None = None
    dropped: int = 0
    repeated: int = 0
    gaps: int = 0

    def place(self, time: Fraction) -> SlotPlacement | None:
        slot = round_half_up(time * self.fps)
        if slot < 0 or (self.next_slot is not None and slot < self.next_slot):
            self.dropped += 1
            return None
        first = slot if self.next_slot is None else self.next_slot
        if slot - first > self.max_repeat:
            self.gaps += 1
            first = slot
        self.repeated += slot - first
        self.next_slot = slot + 1
        return SlotPlacement(range(first, slot), slot)


@dataclass(slots=True)
class SampleClock:
    """Audio timestamps as a sample count that follows the source clock.

    Consecutive frames get back-to-back timestamps (exact durations for the packager); when the
    count and the source time disagree by more than ``tolerance`` samples (lost audio, a
    publisher hiccup), the count jumps to the source time. So it cannot drift from the source.
    """

    rate: int
    tolerance: int = 2048
    next: Fraction | int | None = None
    resyncs: int = 0

    def stamp(self, time: Fraction, samples: Fraction | int) -> int:
        """Timestamp (in samples at ``rate``) of a frame starting at ``time`` seconds."""
        return self.stamp_ratio(time.numerator, time.denominator, samples)

    def stamp_ratio(self, num: int, den: int, samples: Fraction | int) -> int:
        """:meth:`stamp` of a frame starting at ``num / den`` seconds (``den`` > 0)."""
        current = self.next
        if type(current) is int and type(samples) is int:
            # Whole samples (AAC's 1024): the same decisions on integers, per frame.
            n = num * self.rate
            if abs(n - current * den) <= self.tolerance * den:
                self.next = current + samples
                return current
        expected = Fraction(num * self.rate, den)
        if self.next is None or abs(expected - self.next) > self.tolerance:
            if self.next is not None:
                self.resyncs += 1
            self.next = round_half_up(expected)
        start: Fraction | int = self.next
        self.next = start + samples
        return math.floor(start)
