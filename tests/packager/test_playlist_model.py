"""The playlist model's running values: a segment's duration kept as parts are appended, and the
tag lines made once per part and segment; each always matches the fields it comes from."""

from __future__ import annotations

from fractions import Fraction

from packager.playlist import MediaPlaylistState, Part, Segment, render_media_playlist


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


def test_lines_follow_the_fields_they_come_from() -> None:
    seg = Segment(7, Fraction(14), 1_700_000_000.5, "7.m4s", parts=[_part(0, Fraction(1, 3))])
    assert seg.parts[0].line == '#EXT-X-PART:DURATION=0.33333,URI="7.0.m4s",INDEPENDENT=YES'
    assert seg.pdt_line == "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.500Z"
    assert seg.extinf_line == "#EXTINF:0.33333,"
    seg.parts.append(_part(1, Fraction(1, 6)))
    seg.parts[0].independent = False
    seg.program_date_time = 1_700_000_001.25
    assert seg.parts[0].line == '#EXT-X-PART:DURATION=0.33333,URI="7.0.m4s"'
    assert seg.pdt_line == "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.250Z"
    assert seg.extinf_line == "#EXTINF:0.50000,"
    seg.complete = True
    state = MediaPlaylistState(2, Fraction(1, 3), segments=[seg])
    text = render_media_playlist(state)
    listed = [seg.pdt_line, *(p.line for p in seg.parts), seg.extinf_line, seg.uri]
    assert "\n".join(listed) in text
