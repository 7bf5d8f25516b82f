"""Request targets and directives from the network, fuzzed: the edge's target and Range parsing,
the origin's blocking-reload parameters. A result that keeps its promises, or the clear refusal."""

from __future__ import annotations

from fractions import Fraction
from urllib.parse import parse_qsl

from hypothesis import given, settings
from hypothesis import strategies as st

from cdn_edge.paths import HLS_PARAMS, BadTarget, byte_range, parse_target
from packager.access import TOKEN_PARAM
from packager.blocking import MAX_DIGITS, BadReloadRequest, parse_reload
from packager.playlist import MediaPlaylistState, Part, Segment

PIECES = [
    "/hls/",
    "/vod/",
    "/demo/",
    "/static/",
    "/clips/",
    "/replay/",
    "demo",
    "180p",
    "index.m3u8",
    "master.m3u8",
    "init.mp4",
    "12.3.m4s",
    "/",
    "..",
    "%2e",
    "%2f",
    "?",
    "&",
    "=",
    "_HLS_msn",
    "_HLS_part",
    "_HLS_skip",
    "YES",
    "v2",
    TOKEN_PARAM,
    "A" * 22,
    "\x00",
    "²",
    "9" * 25,
]
targets = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=16).map(
    "".join
)
PART = Fraction(1, 3)


@settings(max_examples=1000, deadline=None)
@given(targets)
def test_edge_targets_parse_or_refuse(raw: str) -> None:
    try:
        target = parse_target(raw)
    except BadTarget as exc:
        assert exc.status in (400, 404)
        return
    assert target.path == raw.partition("?")[0]
    assert ".." not in target.path and "//" not in target.path and "%" not in target.path
    assert {name for name, _ in target.params} <= set(HLS_PARAMS)
    upstream = target.upstream("tok")
    assert upstream.startswith(target.path)
    names = [name for name, _ in parse_qsl(upstream.partition("?")[2])]
    assert set(names) <= {*HLS_PARAMS, TOKEN_PARAM}


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80)), st.integers(0, 1 << 40))
def test_byte_range_is_inside_the_object_or_none(header: str | None, size: int) -> None:
    span = byte_range(header, size)
    if span is None or span == (size, size):
        return
    first, last = span
    assert 0 <= first <= last < size


def live_state() -> MediaPlaylistState:
    state = MediaPlaylistState(target_duration=1, part_target=PART)
    for msn, parts, complete in ((100, 3, True), (101, 2, False)):
        seg = Segment(msn, Fraction(msn), float(msn), f"{msn}.m4s", complete=complete)
        seg.parts = [Part(i, PART, i == 0, f"{msn}.{i}.m4s") for i in range(parts)]
        state.segments.append(seg)
    return state


values = st.one_of(st.integers(0, 200).map(str), st.text(max_size=24), st.just("9" * 30))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["_HLS_msn", "_HLS_part", "_HLS_skip", "x"]), values))
def test_reload_directives_parse_or_400(query: dict[str, str]) -> None:
    try:
        request = parse_reload(query, live_state(), Fraction(1))
    except BadReloadRequest as exc:
        assert str(exc)
        return
    for number in (request.msn, request.part):
        assert number is None or 0 <= number < 10**MAX_DIGITS
    assert request.msn is None or request.msn <= 103  # S 6.2.5.2: at most last MSN + 2
