"""The one playlist reader (``packager.playlist.parse_media_playlist``) reads back what the writer
renders: full playlists, delta updates, the last segment; and bad input is one clear error."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.playlist import (
    DateRangeLine,
    MediaPlaylistState,
    Part,
    PlaylistSyntaxError,
    RenditionReport,
    Segment,
    Variant,
    format_pdt,
    parse_media_playlist,
    parse_variants,
    part_uri,
    render_media_playlist,
    render_multivariant_playlist,
    segment_uri,
)

PART = Fraction(1, 3)


def state(first_msn: int, parts_per_segment: list[int], ended: bool = False) -> MediaPlaylistState:
    """Segments of ``parts_per_segment`` parts each from ``first_msn``; the last one open."""
    s = MediaPlaylistState(target_duration=2, part_target=PART, ended=ended)
    for n, count in enumerate(parts_per_segment):
        msn = first_msn + n
        seg = Segment(msn, PART * 6 * n, 1.7e9 + 2 * n, segment_uri(msn))
        seg.parts = [Part(i, PART, i == 0, part_uri(msn, i)) for i in range(count)]
        seg.complete = ended or n < len(parts_per_segment) - 1
        s.segments.append(seg)
    return s


def listed_parts(s: MediaPlaylistState, text: str) -> list[tuple[int, int, str]]:
    """The parts the rendered text lists, as the writer knows them."""
    return [
        (seg.msn, p.index, p.uri)
        for seg in s.segments
        for p in seg.parts
        if f'URI="{p.uri}"' in text
    ]


def test_round_trip_of_a_live_playlist() -> None:
    s = state(40, [6, 6, 6, 2])
    reports = [RenditionReport("../180p/index.m3u8", 43, 1)]
    tag = DateRangeLine("t1", '#EXT-X-DATERANGE:ID="t1",START-DATE="2026-11-21T09:00:00.000Z"', 0)
    text = render_media_playlist(s, reports, dateranges=[tag])
    view = parse_media_playlist(text)
    assert view.parts == listed_parts(s, text) and view.parts[-1] == (43, 1, "43.1.m4s")
    assert [(seg.msn, seg.uri) for seg in view.segments] == [
        (40, "40.m4s"),
        (41, "41.m4s"),
        (42, "42.m4s"),
    ]
    assert [seg.duration for seg in view.segments] == [2.0, 2.0, 2.0]
    assert view.segments[0].program_date_time == format_pdt(s.segments[0].program_date_time)
    assert view.hint == s.next_part == (43, 2)
    assert view.preload_hints == [("PART", "43.2.m4s")]
    assert view.reports == [("../180p/index.m3u8", 43, 1)]
    assert view.dateranges == ["t1"] and view.map_uri == "init.mp4"
    assert view.media_sequence == 40 and view.part_target == pytest.approx(1 / 3, abs=1e-5)
    assert view.can_skip and not view.ended and view.skipped == 0


def test_round_trip_of_a_delta_update_counts_past_the_skip() -> None:
    s = state(100, [6] * 14 + [3])  # 28 s: more than CAN-SKIP-UNTIL (12 s) behind the edge
    full = parse_media_playlist(render_media_playlist(s))
    delta = parse_media_playlist(render_media_playlist(s, skip="YES"))
    assert delta.skipped > 0 and delta.media_sequence == 100
    assert delta.segments == full.segments[delta.skipped :]
    assert delta.parts == full.parts and delta.hint == full.hint == (114, 3)


def test_ended_playlist_has_no_hint() -> None:
    view = parse_media_playlist(render_media_playlist(state(7, [6, 6], ended=True)))
    assert view.ended and view.hint is None and view.segments[-1][:2] == (8, "8.m4s")


@settings(max_examples=60, deadline=None)
@given(
    first=st.integers(0, 10**6),
    counts=st.lists(st.integers(1, 6), min_size=1, max_size=20),
    ended=st.booleans(),
    skip=st.sampled_from([None, "YES", "v2"]),
)
def test_whatever_the_writer_renders_reads_back(
    first: int, counts: list[int], ended: bool, skip: str | None
) -> None:
    s = state(first, counts, ended)
    text = render_media_playlist(s, skip=skip)
    view = parse_media_playlist(text)
    assert view.parts == listed_parts(s, text)
    complete = [
        (
            seg.msn,
            seg.uri,
            float(seg.duration),
            seg.discontinuity,
            format_pdt(seg.program_date_time),
        )
        for seg in s.segments
        if seg.complete
    ]
    assert [(*seg[:2], round(seg[2], 4), *seg[3:]) for seg in view.segments] == [
        (*c[:2], round(c[2], 4), *c[3:]) for c in complete[view.skipped :]
    ]
    assert view.ended is ended and view.hint == (None if ended else s.next_part)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('#EXT-PARINFSKU:=",0123456789\n aURI')), max_size=200))
def test_any_text_parses_or_is_one_clear_error(text: str) -> None:
    try:
        parse_media_playlist(text)
    except PlaylistSyntaxError as exc:
        assert len(str(exc)) < 200


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("#EXT-X-PART:DURATION=0.33", "URI missing"),
        ("#EXT-X-MEDIA-SEQUENCE:x", "not a number"),
        ('#EXT-X-RENDITION-REPORT:URI="a.m3u8"', "LAST-MSN missing"),
        ("#EXT-X-PART-INF:PART-TARGET=" + "9" * 300 + "x", "not a number"),
    ],
)
def test_bad_lines_are_named_cut_short(line: str, message: str) -> None:
    with pytest.raises(PlaylistSyntaxError, match=message) as info:
        parse_media_playlist("#EXTM3U\n" + line + "\n")
    assert len(str(info.value)) < 200


def test_variants_round_trip() -> None:
    variants = [
        Variant("360p/index.m3u8", 800_000, 700_000, "avc1.64001e,mp4a.40.2", 360, 640),
        Variant("audio/index.m3u8", 100_000, 96_000, "mp4a.40.2"),
    ]
    text = render_multivariant_playlist(variants)
    assert parse_variants(text) == [("360p/index.m3u8", 800_000), ("audio/index.m3u8", 100_000)]
    with pytest.raises(PlaylistSyntaxError, match="BANDWIDTH"):
        parse_variants("#EXT-X-STREAM-INF:BANDWIDTH=lots\nx.m3u8\n")
