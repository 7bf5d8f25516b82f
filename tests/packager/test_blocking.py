"""Blocking reload and delta update directives (S 6.2.5.2, S 6.2.5.1), checked without a server."""

from __future__ import annotations

from fractions import Fraction

import pytest

from packager.blocking import (
    BadReloadRequest,
    ReloadRequest,
    advance_part_limit,
    parse_reload,
    satisfied,
)
from packager.playlist import MediaPlaylistState, Part, Segment

PART = Fraction(1, 3)
SEGMENT = Fraction(1)  # three parts a segment


def live_state(ended: bool = False) -> MediaPlaylistState:
    """Segment 100 complete (parts 0-2), segment 101 with parts 0-1 so far."""
    state = MediaPlaylistState(target_duration=1, part_target=PART, ended=ended)
    for msn, parts, complete in ((100, 3, True), (101, 2, False)):
        seg = Segment(msn, Fraction(msn), float(msn), f"{msn}.m4s", complete=complete)
        seg.parts = [Part(i, PART, i == 0, f"{msn}.{i}.m4s") for i in range(parts)]
        state.segments.append(seg)
    return state


def test_advance_part_limit() -> None:
    # S 6.2.5.2: three target durations' worth of parts when PART-TARGET < 1 s, else three.
    assert advance_part_limit(PART) == 9
    assert advance_part_limit(Fraction(334, 1000)) == 9
    assert advance_part_limit(Fraction(1)) == 3
    assert advance_part_limit(Fraction(2)) == 3


ACCEPTED = [
    ({}, ReloadRequest()),
    ({"_HLS_skip": "v2"}, ReloadRequest(skip="v2")),
    ({"_HLS_msn": "101"}, ReloadRequest(101, None, None, True)),
    ({"_HLS_msn": "103"}, ReloadRequest(103, None, None, True)),  # last msn plus two
    ({"_HLS_msn": "101", "_HLS_part": "2"}, ReloadRequest(101, 2, None, True)),
    # Parts ahead of the last one (101.1): (msn - 101) * 3 + part - 1, at most nine.
    ({"_HLS_msn": "101", "_HLS_part": "10"}, ReloadRequest(101, 10, None, True)),
    ({"_HLS_msn": "103", "_HLS_part": "4"}, ReloadRequest(103, 4, None, True)),
    ({"_HLS_msn": "90", "_HLS_part": "0", "_HLS_skip": "YES"}, ReloadRequest(90, 0, "YES", True)),
]


@pytest.mark.parametrize(("query", "expected"), ACCEPTED)
def test_accepted(query: dict[str, str], expected: ReloadRequest) -> None:
    assert parse_reload(query, live_state(), SEGMENT) == expected


REFUSED = [
    ({"_HLS_part": "1"}, "S 6.2.5.2: _HLS_part requires _HLS_msn"),
    ({"_HLS_msn": "x"}, "_HLS_msn must be a decimal integer"),
    ({"_HLS_msn": "-1"}, "_HLS_msn must be a decimal integer"),
    ({"_HLS_msn": "+1"}, "_HLS_msn must be a decimal integer"),
    ({"_HLS_msn": ""}, "_HLS_msn must be a decimal integer"),
    ({"_HLS_msn": "\u00b2"}, "_HLS_msn must be a decimal integer"),  # isdigit() holds
    ({"_HLS_msn": "\u0661"}, "_HLS_msn must be a decimal integer"),  # a non-ASCII digit
    ({"_HLS_msn": "1" * 20}, "_HLS_msn must be a decimal integer"),
    ({"_HLS_msn": "101", "_HLS_part": "1.5"}, "_HLS_part must be a decimal integer"),
    ({"_HLS_msn": "104"}, "greater than the last Media Sequence Number plus two"),
    ({"_HLS_msn": "101", "_HLS_part": "11"}, "exceeds the last part by the Advance Part Limit"),
    ({"_HLS_msn": "103", "_HLS_part": "5"}, "exceeds the last part by the Advance Part Limit"),
]


@pytest.mark.parametrize(("query", "message"), REFUSED)
def test_refused(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadReloadRequest) as err:
        parse_reload(query, live_state(), SEGMENT)
    assert message in str(err.value)


def test_directives_ignored_after_endlist() -> None:
    ended = live_state(ended=True)
    # S 6.2.5.2: no blocking, no range check once the playlist has ENDLIST ...
    got = parse_reload({"_HLS_msn": "999", "_HLS_part": "99"}, ended, SEGMENT)
    assert got == ReloadRequest(999, 99, None, False)
    # ... but a part without an msn is still malformed.
    with pytest.raises(BadReloadRequest, match="requires _HLS_msn"):
        parse_reload({"_HLS_part": "0"}, ended, SEGMENT)


def test_empty_playlist_counts_from_the_hint() -> None:
    empty = MediaPlaylistState(target_duration=1, part_target=PART)
    assert parse_reload({"_HLS_msn": "1"}, empty, SEGMENT).blocking
    with pytest.raises(BadReloadRequest, match="plus two"):
        parse_reload({"_HLS_msn": "2"}, empty, SEGMENT)


SATISFIED = [
    ((100, None), True),  # complete
    ((100, 2), True),
    ((100, 3), True),  # past the last part of 100: part 0 of 101 (hls.js #5608)
    ((101, None), False),  # still open
    ((101, 1), True),
    ((101, 2), False),  # the hinted part
    ((102, None), False),
    ((102, 0), False),
    ((99, None), True),  # older than the window
]


@pytest.mark.parametrize(("wanted", "expected"), SATISFIED)
def test_satisfied(wanted: tuple[int, int | None], expected: bool) -> None:
    assert satisfied(live_state(), *wanted) is expected
    assert satisfied(live_state(ended=True), *wanted)  # ENDLIST answers everything
