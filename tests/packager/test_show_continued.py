"""A show continued on another origin (cluster failover): the new owner's playlists go on from
the dead owner's: sequence numbers above its, a discontinuity numbered above its, the PDT grid on
the wall clock, and the show's DATERANGEs with their original IDs and dates."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from fractions import Fraction

import pytest

from packager.live import LivePackage, PackagerConfig, ShowStart
from packager.playlist import parse_media_playlist
from packager.show import MSN_PER_OWNER
from packager.tags import SHOW_CLASS, Tag

from .conftest import Feeder
from .m3u8 import parse

#: The test media arrives at 1,000,000 s on the first owner (see tests/packager/media.py).
ARRIVAL = 1_000_000.0
#: The show's start as its lease says (the database clock, a little before the first frame).
SHOW_START = ARRIVAL - 0.25
#: The first owner packages 8 s, dies; the next owner's media arrives 11 s after the show's.
DIED, RESUMED = 8.0, 11.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def arriving_at(media: dict, shift: float) -> dict:
    """The same media, ingested ``shift`` seconds later on the wall clock."""
    return {
        name: (info, [replace(p, arrival=p.arrival + shift) for p in packets])
        for name, (info, packets) in media.items()
    }


def ranges(text: str) -> dict[str, str]:
    """ID → the whole EXT-X-DATERANGE line."""
    return {d.attrs["ID"]: d.value for d in parse(text).tags("#EXT-X-DATERANGE")}


def discontinuity_numbers(text: str) -> list[tuple[int, int]]:
    """(msn, discontinuity sequence number) of every listed segment (S 4.4.3.3)."""
    view = parse_media_playlist(text)
    dseq = next((int(d.value) for d in parse(text).tags("#EXT-X-DISCONTINUITY-SEQUENCE")), 0)
    out = []
    for seg in view.segments:
        dseq += seg.discontinuity
        out.append((seg.msn, dseq))
    return out


def stored(tag: Tag) -> Tag:
    """A tag as the next owner reads it back from the store (shopcast.recordings.tag_of)."""
    return replace(tag, time=Fraction(0), added_at=0.0)


@pytest.fixture
def first_owner(media):
    """8 s packaged by the show's first owner with three tags, then the owner is gone."""
    clock = Clock(ARRIVAL)
    package = LivePackage(
        "shop", PackagerConfig(), clock=clock, start=ShowStart(SHOW_START, owner_epoch=1)
    )
    names = ("270p", "180p", "audio")
    feed = Feeder(package, {n: media[n] for n in names})
    feed.until(1.5)
    package.add_tag("pin-1", "product", Fraction(1), {"title": "shoe"}, product_id="sku-1")
    feed.until(3.5)
    package.add_tag("deal-1", "deal", Fraction(3), {"off": 20}, duration=600.0)
    feed.until(5.5)
    package.add_tag("pin-2", "product", Fraction(5), {"title": "bag"}, product_id="sku-2")
    feed.until(DIED)
    clock.now = ARRIVAL + DIED
    return package


def test_a_fresh_show_numbers_from_the_wall_clock_and_its_owner(make_package, media) -> None:
    """Not continued: no discontinuity, the show's range starts at the lease's show start."""
    clock = Clock(ARRIVAL)
    package = LivePackage(
        "shop", PackagerConfig(), clock=clock, start=ShowStart(SHOW_START, owner_epoch=7)
    )
    feed = Feeder(package, {n: media[n] for n in ("270p", "audio")})
    assert package.playlists_ready.is_set()  # with the ladder, as before
    feed.until(4.5)
    text = package.renditions["270p"].playlist()
    view = parse_media_playlist(text)
    assert view.media_sequence == int(ARRIVAL // 2) + 7 * MSN_PER_OWNER
    assert not parse(text).tags("#EXT-X-DISCONTINUITY-SEQUENCE")
    assert not any(s.discontinuity for s in view.segments)
    [show] = parse(text).tags("#EXT-X-DATERANGE")
    assert show.attrs["CLASS"] == SHOW_CLASS
    assert seconds(show.attrs["START-DATE"]) == pytest.approx(SHOW_START, abs=0.001)


def test_the_next_owner_continues_the_same_playlists(first_owner, media) -> None:
    old = first_owner
    old_text = {name: r.playlist() for name, r in old.renditions.items()}
    old_tags = [stored(t) for t in old.tags.tags]

    clock = Clock(ARRIVAL + RESUMED)
    start = ShowStart(SHOW_START, owner_epoch=2, continued=True)
    new = LivePackage("shop", PackagerConfig(), clock=clock, start=start)
    feed = Feeder(new, arriving_at({n: media[n] for n in ("270p", "180p", "audio")}, RESUMED))
    assert new.restore_tags(old_tags) == 3
    feed.until(0.5)
    clock.now = ARRIVAL + RESUMED + 0.5
    first_text = {name: r.playlist() for name, r in new.renditions.items()}
    # Parts only: the origin holds the playlists back until a whole segment is listed (hls.js
    # coming from the old owner takes a playlist without one as empty).
    assert new.ladder_ready.is_set() and not new.playlists_ready.is_set()
    feed.until(2.5)
    assert new.playlists_ready.is_set()
    feed.until(4.5)
    clock.now = ARRIVAL + RESUMED + 4.5
    # A tag on the new owner lands after the restored ones on the timeline.
    new.add_tag("pin-3", "product", Fraction(4), {"title": "hat"}, product_id="sku-3")
    feed.until(6.5)

    for name, r in new.renditions.items():
        text = r.playlist()
        before = parse_media_playlist(old_text[name])
        after = parse_media_playlist(text)  # the playlist reader takes it (S 4 syntax)
        # S 6.2.1: sequence numbers never go back; the URIs are new (an edge caches parts
        # as immutable).
        assert before.hint is not None and after.media_sequence > before.hint[0]
        assert not {u for *_, u in after.parts} & {u for *_, u in before.parts}
        # S 4.4.4.3 / 6.2.2: a discontinuity at the join, numbered above every old segment's.
        assert after.segments[0].discontinuity
        assert not any(s.discontinuity for s in after.segments[1:])
        old_numbers = discontinuity_numbers(old_text[name])
        new_numbers = discontinuity_numbers(text)
        assert new_numbers[0][1] > max(n for _, n in old_numbers)
        # Counted from the show's start, small (hls.js keeps arrays indexed by them).
        show_msn = int(SHOW_START // 2)
        assert all(n <= msn - show_msn for msn, n in old_numbers + new_numbers)
        assert new_numbers[0][1] < 100
        # A 8.4: the PDT grid goes on from the wall clock, after the old owner's last frame.
        old_end = seconds(before.segments[-1].program_date_time) + before.segments[-1].duration
        new_start = seconds(after.segments[0].program_date_time)
        assert new_start == pytest.approx(ARRIVAL + RESUMED, abs=0.05)
        assert new_start > old_end
        # S 4.4.5.1: the same ranges, same ID, same dates and attributes, as the old owner
        # listed them; the show's range first.
        listed_first, listed_old = ranges(first_text[name]), ranges(old_text[name])
        assert listed_first == listed_old
        listed = ranges(text)
        show_id = next(iter(listed_old))
        show = parse(text).tags("#EXT-X-DATERANGE")[0]
        assert show.attrs["ID"] == show_id and show.attrs["CLASS"] == SHOW_CLASS
        assert seconds(show.attrs["START-DATE"]) == pytest.approx(SHOW_START, abs=0.001)
        # pin-1 ended where pin-2 starts, before the new owner's first segment: it may go
        # (S 4.4.5.1: no date in it maps to a listed segment); the rest stays as it was.
        assert list(listed) == [show_id, "deal-1", "pin-2", "pin-3"]
        for range_id in (show_id, "deal-1", "pin-2"):
            assert listed[range_id] == listed_old[range_id]


def test_a_restored_tag_is_listed_once(first_owner, media) -> None:
    """A tag the new owner already placed (posted while it read the store) is not doubled."""
    clock = Clock(ARRIVAL + RESUMED)
    new = LivePackage(
        "shop",
        PackagerConfig(),
        clock=clock,
        start=ShowStart(SHOW_START, owner_epoch=2, continued=True),
    )
    feed = Feeder(new, arriving_at({n: media[n] for n in ("270p", "audio")}, RESUMED))
    feed.until(0.5)
    new.add_tag("pin-3", "product", Fraction(1), {}, product_id="sku-3")
    restored = [stored(t) for t in first_owner.tags.tags] + [stored(new.tags.tags[0])]
    assert new.restore_tags(restored) == 3
    feed.until(2.5)
    # pin-1 ended before the first listed segment; pin-2 ends where pin-3 starts.
    assert list(ranges(new.renditions["270p"].playlist()))[1:] == ["deal-1", "pin-2", "pin-3"]


def test_owners_in_turn_keep_numbers_rising(media) -> None:
    """Three owners, one right after another (clocks 1 s apart, the later one behind): each
    lists sequence and discontinuity numbers above every one before it."""
    last_msn = last_dseq = -1
    for epoch, (arrival, clock_error) in enumerate([(0.0, 0.0), (3.0, 1.0), (5.0, -1.0)], 1):
        clock = Clock(ARRIVAL + arrival + clock_error)
        package = LivePackage(
            "shop",
            PackagerConfig(),
            clock=clock,
            start=ShowStart(SHOW_START, owner_epoch=epoch, continued=epoch > 1),
        )
        Feeder(package, arriving_at({"270p": media["270p"]}, arrival + clock_error)).until(2.5)
        text = package.renditions["270p"].playlist()
        numbers = discontinuity_numbers(text)
        assert numbers[0][0] > last_msn and numbers[0][1] > last_dseq
        hint = parse_media_playlist(text).hint  # hls.js keeps the hinted segment too
        assert hint is not None
        last_msn, last_dseq = hint[0], numbers[-1][1]
