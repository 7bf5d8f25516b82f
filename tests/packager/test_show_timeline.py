"""The show timeline's per-packet path: media ends kept in integer ticks move the timeline on
exactly as the Fraction reference (``media_until``) does."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from packager.show import ShowTimeline


def _timeline() -> ShowTimeline:
    show = ShowTimeline(Fraction(2), lambda: 1_000_000.0)
    show.frame_rate = Fraction(30)
    return show


@pytest.mark.parametrize("move", ["reconnect", "slate", "switch"])
def test_tick_ends_move_the_timeline_like_fraction_ends(move: str) -> None:
    rng = random.Random(7)
    reference, ticks = _timeline(), _timeline()
    for session in range(3):
        # Video at 90 kHz and AAC at 44.1 kHz, out of order across tracks, as renditions push.
        for _ in range(200):
            timescale = rng.choice((90_000, 44_100))
            end = rng.randrange(-1_000, 40 * timescale)
            reference.media_until(Fraction(end, timescale))
            ticks.media_until_ticks(end, timescale)
        start = Fraction(session, 3)
        for show in (reference, ticks):
            if move == "reconnect":
                show.continue_after_reconnect()
            elif move == "slate":
                show.continue_on_slate()
            else:
                show.continue_on_switch(start)
        assert ticks.offset == reference.offset
        assert ticks.session_end == reference.session_end
