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


@dataclass(slots=True)
class RepairedTime:
    """A unit's time on the output timeline: seconds since the stream's origin."""

    pts: Fraction
    dts: Fraction
    jumped: bool


@dataclass(slots=True)
class StreamTimeline:
    """Maps source timestamps of every track onto one timeline that starts at 0.

    The origin is the DTS of the first media unit of any track, so both tracks keep their
    relative timing (A/V sync is the publisher's). A DTS going backwards (a reset, a 32-bit wrap)
    or forward by more than ``max_gap`` seconds is a jump: that track is rebased to continue one
    unit after its last one. When the other track jumps by about the same amount (within 1 s), it
    reuses the same shift, so a publisher's clock reset moves audio and video together.
    """

    max_gap: Fraction = Fraction(5)
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
            # from integer ticks; Fraction arithmetic was a quarter of the event loop.
            den, gap = track.den, self.max_gap
            delta = unit.dts - track.last_n
            if delta >= 0 and delta * gap.denominator <= gap.numerator * den:
                if delta > 0:
                    track.step_n = delta
                track.last_n = unit.dts
                bn, bd = track.base.numerator, track.base.denominator
                return RepairedTime(
                    Fraction(unit.pts * bd + bn * den, den * bd),
                    Fraction(unit.dts * bd + bn * den, den * bd),
                    False,
                )
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
            track.den, track.last_n, track.step_n = unit.timebase.denominator, unit.dts, 0
            track.base = base
        return RepairedTime(raw_pts + base, raw_dts + base, jumped)


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
        current = self.next
        if type(current) is int and type(samples) is int:
            # Whole samples (AAC's 1024): the same decisions on integers, per frame.
            n, d = time.numerator * self.rate, time.denominator
            if abs(n - current * d) <= self.tolerance * d:
                self.next = current + samples
                return current
        expected = time * self.rate
        if self.next is None or abs(expected - self.next) > self.tolerance:
            if self.next is not None:
                self.resyncs += 1
            self.next = round_half_up(expected)
        start: Fraction | int = self.next
        self.next = start + samples
        return math.floor(start)
