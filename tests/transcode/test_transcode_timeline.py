"""Output timing without codecs: timeline repair, constant-rate slot picking, audio sample clock."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from transcode.timeline import (
    FrameSlotPicker,
    RepairedTime,
    SampleClock,
    StreamTimeline,
    round_half_up,
    to_ticks,
)


def unit(kind: MediaKind, ms: int, pts: int | None = None) -> MediaUnit:
    return MediaUnit(kind, "h264", ms if pts is None else pts, ms, MILLISECONDS, False, b"", 0.0)


def test_round_half_up() -> None:
    assert [round_half_up(Fraction(n, 2)) for n in range(-3, 4)] == [-1, -1, 0, 0, 1, 1, 2]


def test_timeline_starts_at_first_dts_of_any_track() -> None:
    timeline = StreamTimeline()
    assert timeline.place(unit(MediaKind.AUDIO, 5000)).pts == 0
    video = timeline.place(unit(MediaKind.VIDEO, 5020, pts=5087))
    assert (video.dts, video.pts) == (Fraction(20, 1000), Fraction(87, 1000))


def test_backward_jump_moves_both_tracks_by_the_same_shift() -> None:
    timeline = StreamTimeline()
    for ms in range(0, 1000, 33):
        timeline.place(unit(MediaKind.VIDEO, ms))
        timeline.place(unit(MediaKind.AUDIO, ms + 5))
    # Publisher clock reset to 0 (or a 32-bit wrap).
    video = timeline.place(unit(MediaKind.VIDEO, 0))
    audio = timeline.place(unit(MediaKind.AUDIO, 5))
    assert video.jumped and audio.jumped and timeline.jumps == 2
    assert video.pts == Fraction(990 + 33, 1000)
    assert audio.pts - video.pts == Fraction(5, 1000)  # relative timing kept
    after = timeline.place(unit(MediaKind.VIDEO, 33))
    assert not after.jumped and after.pts == video.pts + Fraction(33, 1000)


def test_forward_gap_below_max_gap_is_kept_above_is_a_jump() -> None:
    timeline = StreamTimeline(max_gap=Fraction(5))
    timeline.place(unit(MediaKind.VIDEO, 0))
    timeline.place(unit(MediaKind.VIDEO, 33))
    kept = timeline.place(unit(MediaKind.VIDEO, 3033))  # units lost by a slow reader
    assert not kept.jumped and kept.pts == Fraction(3033, 1000)
    jumped = timeline.place(unit(MediaKind.VIDEO, 3033 + 3_600_000))
    assert jumped.jumped and jumped.pts == Fraction(6033, 1000)


def test_picker_same_rate_maps_one_to_one_despite_ms_rounding() -> None:
    picker = FrameSlotPicker(Fraction(30))
    slots = []
    for i in range(300):
        placed = picker.place(Fraction(round(i * 1000 / 30), 1000))
        assert placed is not None and not placed.repeats
        slots.append(placed.slot)
    assert slots == list(range(300))


def test_picker_halves_60_fps() -> None:
    picker = FrameSlotPicker(Fraction(30))
    kept = [picker.place(Fraction(round(i * 1000 / 60), 1000)) for i in range(120)]
    slots = [p.slot for p in kept if p is not None]
    assert slots == list(range(60)) and picker.dropped == 60 and picker.repeated == 0


def test_picker_fills_vfr_gaps_with_repeats() -> None:
    picker = FrameSlotPicker(Fraction(30))
    assert picker.place(Fraction(0)).slot == 0  # type: ignore[union-attr]
    placed = picker.place(Fraction(140, 1000))  # 4 slots later
    assert placed is not None and placed.repeats == range(1, 4) and placed.slot == 4
    assert picker.place(Fraction(145, 1000)) is None  # same slot again: dropped


def test_picker_does_not_fill_huge_gaps_and_drops_before_origin() -> None:
    picker = FrameSlotPicker(Fraction(30), max_repeat=10)
    assert picker.place(Fraction(-1, 10)) is None
    picker.place(Fraction(0))
    placed = picker.place(Fraction(60))
    assert placed is not None and not placed.repeats and picker.gaps == 1


def test_sample_clock_is_back_to_back_and_follows_source_over_an_hour() -> None:
    clock = SampleClock(48000)
    pts = 0
    # An hour of 1024-sample frames whose ms timestamps are rounded (21.333 ms apart).
    for n in range(48000 * 3600 // 1024):
        source_ms = round(n * 1024 * 1000 / 48000)
        pts = clock.stamp(Fraction(source_ms, 1000), 1024)
        assert pts == n * 1024
    assert clock.resyncs == 0 and pts == (48000 * 3600 // 1024 - 1) * 1024


def test_sample_clock_resyncs_after_lost_audio() -> None:
    clock = SampleClock(48000)
    assert clock.stamp(Fraction(0), 1024) == 0
    assert clock.stamp(Fraction(1, 2), 1024) == 24000  # half a second of audio lost
    assert clock.resyncs == 1


def test_rtmp_32_bit_wrap_continues_the_timeline() -> None:
    timeline = StreamTimeline()
    wrap = 2**32
    for ms in range(wrap - 990, wrap, 33):
        last = timeline.place(unit(MediaKind.VIDEO, ms))
    after = timeline.place(unit(MediaKind.VIDEO, 16))
    assert after.jumped and after.pts == last.pts + Fraction(33, 1000)


class ReferenceTimeline(StreamTimeline):
    """Fraction arithmetic for every unit: what the integer fast path must equal."""

    def place(self, unit: MediaUnit) -> RepairedTime:
        return self._place(unit)


TIMEBASES = [MILLISECONDS, Fraction(1, 90_000), Fraction(1, 48_000), Fraction(2, 90_000)]


#: DTS steps: small, on and around the 5 s gap in each timebase (ms, 90 kHz, 48 kHz), back.
EDGES = [-3_000, -1, 0, 1, 33, 4_999, 5_000, 5_001, 240_000, 240_001, 450_000, 450_001]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([MediaKind.VIDEO, MediaKind.AUDIO]),
            st.one_of(st.sampled_from(EDGES), st.integers(-3_000, 3_000)),
            st.integers(0, 200),  # PTS - DTS
            st.integers(0, 9),  # now and then another timebase
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(0, 2**33),
)
def test_timeline_fast_path_equals_the_fraction_reference(
    steps: list[tuple[MediaKind, int, int, int]], start: int
) -> None:
    fast, reference = StreamTimeline(), ReferenceTimeline()
    dts = {MediaKind.VIDEO: start, MediaKind.AUDIO: start}
    for kind, step, cts, pick in steps:
        dts[kind] = max(0, dts[kind] + step)
        timebase = TIMEBASES[pick] if pick < len(TIMEBASES) else MILLISECONDS
        u = MediaUnit(kind, "h264", dts[kind] + cts, dts[kind], timebase, False, b"", 0.0)
        assert fast.place(u) == reference.place(u)
    assert fast.jumps == reference.jumps


def reference_stamp(clock: SampleClock, time: Fraction, samples: Fraction | int) -> int:
    """SampleClock.stamp in Fractions throughout (before its integer fast path)."""
    expected = time * clock.rate
    if clock.next is None or abs(expected - clock.next) > clock.tolerance:
        if clock.next is not None:
            clock.resyncs += 1
        clock.next = Fraction(round_half_up(expected))
    pts = clock.next
    clock.next += samples
    return math.floor(pts)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 0, 0, 2_047, 2_048, 2_049, -2_048, -2_049, 5_000]),
            st.integers(-2, 2),  # and a fraction of a sample
            st.sampled_from([1024, 960]),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_sample_clock_fast_path_equals_the_fraction_reference(
    frames: list[tuple[int, int, int]],
) -> None:
    """Frames on the count, off by the tolerance (2048 samples) or just past it, or between."""
    fast, reference = SampleClock(48_000), SampleClock(48_000)
    on_count = 0
    for off, fraction, samples in frames:
        time = Fraction(on_count + off, 48_000) + Fraction(fraction, 90_000)
        # As the transcoder asks: the time as an unreduced ratio (see RepairedTime).
        stamped = fast.stamp_ratio(time.numerator * 7, time.denominator * 7, samples)
        assert stamped == reference_stamp(reference, time, samples)
        on_count = int(reference.next or 0)
    assert fast.resyncs == reference.resyncs


@given(st.fractions(-(10**6), 10**6), st.sampled_from([1000, 48_000, 90_000]))
def test_to_ticks_is_round_half_up_of_the_product(seconds: Fraction, timescale: int) -> None:
    assert to_ticks(seconds, timescale) == round_half_up(seconds * timescale)


@given(
    st.fractions(-(10**6), 10**6),
    st.fractions(-(10**6), 10**6),
    st.integers(1, 1000),
    st.sampled_from([1000, 48_000, 90_000]),
)
def test_repaired_time_ticks_and_equality_are_those_of_its_fractions(
    pts: Fraction, dts: Fraction, scale: int, timescale: int
) -> None:
    """Kept as unreduced integers: the same ticks and the same value as the Fractions."""
    time = RepairedTime.of(pts, dts, False)
    unreduced = RepairedTime(time.pts_n * scale, time.dts_n * scale, time.den * scale, False)
    assert (unreduced.pts, unreduced.dts) == (pts, dts)
    assert unreduced.pts_ticks(timescale) == to_ticks(pts, timescale)
    assert unreduced.dts_ticks(timescale) == to_ticks(dts, timescale)
    assert unreduced == time and unreduced != RepairedTime.of(pts, dts, True)
