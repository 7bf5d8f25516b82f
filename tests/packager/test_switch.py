"""Switching inputs in the live package (sans-I/O): the cue waits for an IDR at the same frame on
every video rendition, the switch frame follows the last media on an unbroken PDT grid after a
discontinuity, media before the cue is not listed, and an input of another ladder is refused."""

from __future__ import annotations

from fractions import Fraction

import pytest

from packager.live import LivePackage, PackagerConfig
from packager.switch import SwitchCue, SwitchRefused
from transcode.output import EncodedPacket, RenditionInfo

from .conftest import Feeder
from .m3u8 import parse

NAMES = ("270p", "180p", "audio")


def events(media: dict, start: float, end: float) -> list[EncodedPacket]:
    """The test media's packets from ``start`` to ``end`` seconds, in decode order."""
    out = []
    for info, packets in media.values():
        for p in packets:
            at = Fraction(p.dts, info.timescale)
            if start <= at < end:
                out.append((at, info.kind.value, p))
    out.sort(key=lambda e: (e[0], e[1]))
    return [p for _, _, p in out]


async def test_switch_at_an_aligned_idr_continues_the_pdt_grid(media) -> None:
    shown = {n: media[n] for n in NAMES}
    package = LivePackage("shop", PackagerConfig())
    feed = Feeder(package, shown)
    feed.until(6)
    cue = SwitchCue(package, "closeup")
    infos: list[RenditionInfo] = [info for info, _ in shown.values()]
    for info in infos:
        cue.on_rendition(info)
    # The new input (here: the same media from 3 s on; IDRs every 2 s) before its ladder.
    early = events(shown, 3, 4.5)
    for p in early:
        cue.on_packet(p)
    assert not cue.ready.done()
    cue.on_ladder(infos)
    assert cue.ready.done() and cue.ready.result() == 4  # the IDR at 4 s on both rungs
    for p in events(shown, 4.5, 5):
        cue.on_packet(p)  # held while the old input's last frames are listed
    feed.until(6.5)
    package.on_end()

    switched = cue.take_over(cue.ready.result())
    assert package.active_input == "closeup"
    for p in events(shown, 5, 9):
        cue.on_packet(p)
    for name, r in package.renditions.items():
        pl = parse(r.playlist())
        tags = [x.tag for x in pl.lines]
        assert "#EXT-X-DISCONTINUITY" in tags, name
        segs = r.state.segments
        after = next(i for i, s in enumerate(segs) if s.discontinuity)
        before, first = segs[after - 1], segs[after]
        # The switch frame starts where the last media ended, on the same PDT grid.
        end = before.program_date_time + float(before.duration)
        assert abs(first.program_date_time - end) <= 1 / 30 + 1e-3, name
        assert abs(first.program_date_time - package.program_date_time(switched)) < 1e-3
        assert first.msn == before.msn + 1
        # Media held from before the cue (3-4 s) is not listed: 4 s → 9 s is 5 s of it.
        listed = sum(float(s.duration) for s in segs[after:])
        assert listed <= 5 + 1e-6, (name, listed)


async def test_input_of_another_ladder_is_refused(media) -> None:
    shown = {n: media[n] for n in NAMES}
    package = LivePackage("shop", PackagerConfig())
    Feeder(package, shown).until(3)
    cue = SwitchCue(package, "wide")
    infos = [media["180p"][0], media["audio"][0]]  # no 270p rung
    cue.on_ladder(infos)
    with pytest.raises(SwitchRefused, match="cannot feed this show's renditions"):
        cue.ready.result()
    cue.on_packet(media["180p"][1][0])  # nothing of a refused input is kept
    assert package.active_input == "main"
