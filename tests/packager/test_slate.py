"""The slate in the live package: switch after a discontinuity (with its own EXT-X-MAP when its
avcC differs), PDT grid and sequence numbers continue, part cadence kept, tags land on slate
frames, the publisher's return switches back; PyAV decodes what is listed."""

from __future__ import annotations

import io
from fractions import Fraction

import av

from packager.live import LivePackage, PackagerConfig
from transcode.policy import LadderConfig
from transcode.slate import encode_slate

from .conftest import Feeder
from .m3u8 import parse

#: The test media arrives at 1,000,000 s (its time 0 is packaged at 10 s); 6 s in, the drop.
ARRIVAL = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = ARRIVAL

    def __call__(self) -> float:
        return self.now


def on_slate(media: dict, noticed_after: float = 0.0) -> tuple[Feeder, Clock]:
    """6 s of media, the source ends (a drop), the slate starts ``noticed_after`` s later."""
    clock = Clock()
    package = LivePackage("shop", PackagerConfig(), clock=clock)
    feed = Feeder(package, {n: media[n] for n in ("270p", "180p", "audio")})
    feed.until(6)
    package.on_end()
    clock.now = ARRIVAL + 6 + noticed_after
    audio = package.audio
    clips = {
        name: encode_slate(None, r.info, audio, LadderConfig())
        for name, r in package.renditions.items()
    }
    package.set_slate(clips)
    assert package.start_slate()
    return feed, clock


def slate_segments(text: str) -> list[tuple[str, str, str]]:
    """(map, PDT, URI) of every complete segment after the first discontinuity."""
    out, seen, current_map, pdt, extinf = [], False, "", "", False
    for line in text.splitlines():
        if line == "#EXT-X-DISCONTINUITY":
            if seen:
                break
            seen = True
        elif line.startswith("#EXT-X-MAP:"):
            current_map = line.split('"')[1]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = line.split(":", 1)[1]
        elif line.startswith("#EXTINF"):
            extinf = True
        elif extinf and seen:
            out.append((current_map, pdt, line))
            extinf = False
        elif extinf:
            extinf = False
    return out


async def test_slate_follows_at_once_with_its_own_map_and_the_same_grid(media) -> None:
    feed, clock = on_slate(media)
    package = feed.package
    assert package.active_input == "slate"
    for name, r in package.renditions.items():
        pl = parse(r.playlist())
        lines = [(x.tag, x.value) for x in pl.lines]
        disc = lines.index(("#EXT-X-DISCONTINUITY", ""))
        # S 4.4.4.3/4.4.4.5: the slate's init (the test media's avcC is not the slate's) is
        # named by an EXT-X-MAP right after the discontinuity.
        assert lines[disc + 1][0] == "#EXT-X-MAP" and "slate-" in lines[disc + 1][1], name
        parts_after = [x for x in pl.lines[disc:] if x.tag == "#EXT-X-PART"]
        assert parts_after, f"{name}: no slate part listed at the switch"
        # The PDT grid continues: the slate's first date is where the last segment ended.
        assert pl.lines[disc + 2].tag == "#EXT-X-PROGRAM-DATE-TIME"
        segs = r.state.segments
        live_end = segs[-2].program_date_time + float(segs[-2].duration)
        assert abs(segs[-1].program_date_time - live_end) <= 1 / 30 + 1e-3, name
        assert segs[-1].msn == segs[-2].msn + 1  # media sequence continues

    # 5 s of wall clock on slate: parts keep their cadence, segments are whole GOPs.
    for _ in range(50):
        clock.now += 0.1
        package.advance_slate()
    for name, r in package.renditions.items():
        slate = [s for s in r.state.segments if s.map_uri]
        assert [float(s.duration) for s in slate if s.complete] == [2.0, 2.0], name
        for seg in slate:
            assert all(float(p.duration) <= 0.334 for p in seg.parts)
            assert seg.parts[0].independent
        # Listed a part ahead of the wall clock, never more.
        listed = sum(float(s.duration) for s in slate)
        assert 5.0 <= listed <= 5.0 + 0.334 + 1e-6, listed
        assert abs(package.slate_seconds - 5.0) < 1e-3

        # PyAV decodes a slate segment with the slate's init: the rendition's size.
        init_uri, _, uri = slate_segments(r.playlist())[0]
        blob = r.files[init_uri] + r.files[uri]
        with av.open(io.BytesIO(blob)) as c:
            sizes = {(f.width, f.height) for f in c.decode(video=0)}
        assert sizes == {(r.info.width, r.info.height)}


async def test_tag_on_slate_and_return_of_the_publisher(media) -> None:
    feed, clock = on_slate(media)
    package = feed.package
    clock.now += 1.0
    package.advance_slate()
    at = package.slate_time()
    assert at is not None
    tag, late = package.add_tag("t1", "product", at, {"title": "x"}, product_id="sku")
    assert not late  # the newest slate frame is in the part still open, like a live tag's
    slate_start = next(s for s in package.renditions["180p"].state.segments if s.map_uri)
    assert tag.program_date_time >= slate_start.program_date_time  # on a slate frame
    clock.now += 1.0
    package.advance_slate()
    for r in package.renditions.values():
        assert 'ID="t1"' in r.playlist()
        holding = [
            uri for uri, data in r.files.items() if uri.endswith(".m4s") and b"emsg" in data[:8]
        ]
        assert holding, "the tag's emsg is in a slate part"

    # The publisher is back: the slate ends, another discontinuity, the main init again.
    package.stop_slate()
    package.continue_after_reconnect()
    assert package.active_input == "main"
    events = feed.events
    feed.pos = 0
    for _, _, packet in events[: len(events) // 4]:
        package.on_packet(packet)
    for r in package.renditions.values():
        text = r.playlist()
        assert text.count("#EXT-X-DISCONTINUITY\n") == 2
        maps = [line.split('"')[1] for line in text.splitlines() if line.startswith("#EXT-X-MAP")]
        assert maps[0] == "init.mp4" and maps[1].startswith("slate-") and maps[2] == "init.mp4"


async def test_delta_update_names_the_first_listed_segments_init(media) -> None:
    feed, clock = on_slate(media)
    package = feed.package
    for _ in range(150):  # 15 s of slate: the live segments are all skippable
        clock.now += 0.1
        package.advance_slate()
    r = package.renditions["180p"]
    delta = parse(r.playlist(skip="YES"))
    skipped = int(delta.one("#EXT-X-SKIP").attrs["SKIPPED-SEGMENTS"])
    first = r.state.segments[skipped]
    # S 4.4.4.5: the EXT-X-MAP in force for the first segment listed after the skip.
    assert delta.tags("#EXT-X-MAP")[0].attrs["URI"] == (first.map_uri or "init.mp4")


async def test_finish_on_slate_ends_every_playlist(media) -> None:
    feed, clock = on_slate(media)
    clock.now += 0.7
    feed.package.advance_slate()
    feed.package.finish()
    assert feed.package.active_input == "main"
    for r in feed.package.renditions.values():
        text = r.playlist()
        assert text.rstrip().endswith("#EXT-X-ENDLIST") or "#EXT-X-ENDLIST" in text
        assert "PRELOAD-HINT" not in text
    assert Fraction(feed.package.slate_seconds).limit_denominator(10) == Fraction(7, 10)


async def test_audio_only_show_gets_silence(media) -> None:
    clock = Clock()
    package = LivePackage("radio", PackagerConfig(), clock=clock)
    feed = Feeder(package, {"audio": media["audio"]})
    feed.until(4)
    package.on_end()
    [r] = package.renditions.values()
    package.set_slate({r.name: encode_slate(None, None, r.info, LadderConfig())})
    assert package.start_slate()
    for _ in range(30):
        clock.now += 0.1
        package.advance_slate()
    text = r.playlist()
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1 and "slate-" not in text
    first = next(i for i, s in enumerate(r.state.segments) if s.discontinuity)
    assert sum(float(s.duration) for s in r.state.segments[first:]) >= 3.0  # paced, a part ahead
    init_uri, _, uri = slate_segments(text)[0]
    blob = r.files[init_uri] + r.files[uri]
    with av.open(io.BytesIO(blob)) as c:
        samples = [f.to_ndarray() for f in c.decode(audio=0)]
    assert len(samples) >= 40 and max(float(abs(a).max()) for a in samples) < 1e-4


async def test_a_drop_noticed_late_lists_the_missed_time_at_once(media) -> None:
    """A media gap is noticed after gap_timeout: the slate covers that second at once, so the
    newest part's date stays at the wall clock."""
    feed, clock = on_slate(media, noticed_after=1.0)
    for r in feed.package.renditions.values():
        first = next(s for s in r.state.segments if s.map_uri)
        listed = sum(float(p.duration) for p in first.parts)
        assert 0.95 <= listed <= 1.0 + 0.334 + 0.034, listed  # not just the first part
        # The newest part ends within a part target of the wall clock, as live parts do.
        assert first.program_date_time + listed >= clock.now - 0.334
