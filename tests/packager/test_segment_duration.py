"""A segment's duration is kept as parts are appended; it always equals its parts' sum."""

from __future__ import annotations

from fractions import Fraction

from packager.playlist import Part, Segment


def _part(i: int, duration: Fraction) -> Part:
    return Part(i, duration, i == 0, f"7.{i}.m4s")


def test_duration_follows_appended_replaced_and_cut_parts() -> None:
    seg = Segment(7, Fraction(14), 1.7e9, "7.m4s")
    assert seg.duration == 0
    durations = [Fraction(1, 3), Fraction(3003, 9000), Fraction(1, 5), Fraction(7, 30)]
    for i, d in enumerate(durations):
        seg.parts.append(_part(i, d))
        assert seg.duration == sum(durations[: i + 1])
    seg.parts = [_part(0, Fraction(1, 2))]  # a new list: counted anew
    assert seg.duration == Fraction(1, 2)
    seg.parts.append(_part(1, Fraction(1, 4)))
    del seg.parts[:]  # cut: counted anew
    assert seg.duration == 0
    seg.parts.append(_part(0, Fraction(1, 5)))
    assert seg.duration == Fraction(1, 5)
    seg.parts[-1:] = [_part(0, Fraction(1, 6))]  # the last one replaced: counted anew
    assert seg.duration == Fraction(1, 6)
    fresh = Segment(7, Fraction(14), 1.7e9, "7.m4s", parts=[_part(0, Fraction(1, 6))])
    assert seg == fresh  # the running sum is not compared
