"""Product tags in the packager: DATERANGE in every playlist, emsg ID3 on the exact frame."""

from __future__ import annotations

import json
from datetime import datetime
from fractions import Fraction

import pytest

from packager.fmp4 import ID3_SCHEME
from packager.live import PackagerConfig
from packager.tags import SHOW_CLASS

from .boxes import iter_boxes, trafs
from .id3 import parse_emsg, read_txxx
from .m3u8 import parse

FRAME = Fraction(1, 30)


def pdt_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def tag_ranges(pl):
    """The playlist's DATERANGEs of tags (the show's own range aside)."""
    return [d for d in pl.tags("#EXT-X-DATERANGE") if d.attrs.get("CLASS") != SHOW_CLASS]


def emsgs_by_part(r) -> dict[str, list[dict]]:
    out = {}
    for name, data in r.files.items():
        if name.count(".") != 2:
            continue
        boxes = list(iter_boxes(data))
        found = [parse_emsg(p) for k, p in boxes if k == b"emsg"]
        if found:
            kinds = [k for k, _ in boxes]
            assert kinds.index(b"moof") > max(i for i, k in enumerate(kinds) if k == b"emsg")
            out[name] = found
        else:
            assert b"emsg" not in [k for k, _ in boxes]
    return out


async def test_tag_lands_on_the_same_frame_everywhere(make_package) -> None:
    feed = make_package()
    feed.until(3)
    t = 117 * FRAME  # frame 117 is ahead of what has been cut: not late
    tag, late = feed.package.add_tag(
        "tag-1", "product", t, {"title": "red sneaker"}, product_id="sku-123"
    )
    assert not late
    feed.until(6)
    lines = {}
    for name, r in feed.package.renditions.items():
        pl = parse(r.playlist())
        [dr] = tag_ranges(pl)
        lines[name] = dr.value
        a = dr.attrs
        assert (a["ID"], a["CLASS"], a["END-ON-NEXT"]) == ("tag-1", "com.shopcast.product", "YES")
        assert "DURATION" not in a and "END-DATE" not in a
        # The open pin's expected duration (Shaka reports an END-ON-NEXT range only with it).
        assert a["PLANNED-DURATION"] == "86400.000"
        assert a["X-COM-SHOPCAST-PRODUCT"] == "sku-123"
        data = json.loads(bytes.fromhex(a["X-COM-SHOPCAST-DATA"][2:]))
        assert data == {"title": "red sneaker"}
        # START-DATE is the PDT of the stamped frame, per the playlist's own PDT mapping.
        segs = r.state.segments
        seg = [s for s in segs if s.start <= tag.time][-1]
        expected = seg.program_date_time + float(tag.time - seg.start)
        assert pdt_seconds(a["START-DATE"]) == pytest.approx(expected, abs=0.0015)
        # The emsg sits in the part holding that frame, with that frame's pts.
        [(part, [box])] = emsgs_by_part(r).items()
        assert box["scheme"] == ID3_SCHEME and box["duration"] == 0xFFFFFFFF
        assert box["timescale"] == 90000
        assert box["presentation_time"] == round(tag.time * 90000)
        video = next(t for t in trafs(r.files[part]) if t.track_id == 1)
        pts = [
            video.base_dts + sum(video.durations[:i]) + video.ctos[i]
            for i in range(len(video.ctos))
        ]
        assert box["presentation_time"] in pts  # a frame of this very part
        payload = json.loads(read_txxx(box["data"])["com.shopcast.tag"])
        assert payload == {
            "id": "tag-1",
            "kind": "product",
            "product_id": "sku-123",
            "data": {"title": "red sneaker"},
        }
        # ... and in its parent segment, which is the parts' bytes.
        msn = part.split(".")[0]
        if f"{msn}.m4s" in r.files:
            assert r.files[part] in r.files[f"{msn}.m4s"]
    assert len(set(lines.values())) == 1  # identical DATERANGE on every rendition


async def test_late_tag_rides_in_the_next_part_with_its_true_time(make_package) -> None:
    feed = make_package()
    feed.until(4)
    t = 30 * FRAME  # one second in: long published
    tag, late = feed.package.add_tag("late-1", "deal", t, {"pct": 20}, duration=30)
    assert late
    feed.until(5)
    for r in feed.package.renditions.values():
        [(part, [box])] = emsgs_by_part(r).items()
        assert box["presentation_time"] == round(tag.time * 90000)
        first = trafs(r.files[part])[0]
        assert first.base_dts > box["presentation_time"]  # fired late, never wrong
        [dr] = tag_ranges(parse(r.playlist()))
        assert dr.attrs["DURATION"] == "30.000" and "END-ON-NEXT" not in dr.attrs
        assert "PLANNED-DURATION" not in dr.attrs


async def test_end_on_next_chain_and_pruning(make_package) -> None:
    feed = make_package(PackagerConfig(window_segments=6))
    feed.until(0.2)
    for i, second in enumerate((0.5, 1, 1.5)):
        feed.package.add_tag(f"p{i}", "product", Fraction(second), {}, product_id=f"sku-{i}")
    feed.until(15.9)
    r = feed.package.renditions["180p"]
    pl = parse(r.playlist())
    ids = [d.attrs["ID"] for d in tag_ranges(pl)]
    # p0 and p1 ended (on the next pin) before the oldest listed segment; p2 is still pinned.
    oldest = pdt_seconds(pl.tags("#EXT-X-PROGRAM-DATE-TIME")[0].value)
    assert oldest > feed.package.program_date_time(feed.package.timeline_offset + 1.5)
    assert ids == ["p2"]
    assert [i for i, _ in feed.package.tags.removed] == ["p0", "p1"]


async def test_delta_update_v2_skips_old_ranges(make_package) -> None:
    feed = make_package()
    clock = {"now": 1000.0}
    feed.package.clock = lambda: clock["now"]
    feed.until(1)
    feed.package.add_tag("old", "poll", Fraction(1), {"q": "size?"}, duration=60)
    clock["now"] += 60  # long settled: every delta-updating client has it
    feed.until(15.5)
    feed.package.add_tag("new", "poll", Fraction(15), {"q": "colour?"}, duration=60)
    r = feed.package.renditions["180p"]
    full = parse(r.playlist())
    assert [d.attrs["ID"] for d in tag_ranges(full)] == ["old", "new"]
    assert "CAN-SKIP-DATERANGES=YES" in full.one("#EXT-X-SERVER-CONTROL").value
    v2 = parse(r.playlist(skip="v2"))
    assert int(v2.one("#EXT-X-VERSION").value) >= 10  # S 8
    skip = v2.one("#EXT-X-SKIP").attrs
    assert int(skip["SKIPPED-SEGMENTS"]) > 0
    assert skip["RECENTLY-REMOVED-DATERANGES"] == ""
    # The show's range (listed from the start, settled) goes with "old".
    assert [d.attrs["ID"] for d in v2.tags("#EXT-X-DATERANGE")] == ["new"]
    yes = parse(r.playlist(skip="YES"))  # plain YES keeps every range
    assert [d.attrs["ID"] for d in tag_ranges(yes)] == ["old", "new"]
    assert len(yes.tags("#EXT-X-DATERANGE")) == 3


async def test_show_range_is_listed_from_the_first_part_without_client_attributes(
    make_package,
) -> None:
    """The show's own open range (tags.show_daterange): in every playlist from the first part
    on, the same everywhere, no X- attribute (so hls.js makes no cue of it), never pruned."""
    feed = make_package(PackagerConfig(window_segments=6))
    feed.until(0.4)
    first = {}
    for name, r in feed.package.renditions.items():
        pl = parse(r.playlist())
        [dr] = pl.tags("#EXT-X-DATERANGE")
        first[name] = dr.value
        assert dr.attrs["CLASS"] == SHOW_CLASS
        assert not [k for k in dr.attrs if k.startswith("X-")]
        assert not {"DURATION", "END-DATE", "END-ON-NEXT"} & dr.attrs.keys()
        pdt = pl.tags("#EXT-X-PROGRAM-DATE-TIME")[0].value
        assert pdt_seconds(dr.attrs["START-DATE"]) == pytest.approx(pdt_seconds(pdt), abs=0.0015)
    assert len(set(first.values())) == 1
    feed.package.add_tag("p0", "product", Fraction(1), {}, product_id="sku-0")
    feed.until(20)  # the first segments and p0's frame have left the window
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        listed = pl.tags("#EXT-X-DATERANGE")
        assert listed[0].value == next(iter(first.values()))  # first, still, unchanged
        assert [d.attrs["ID"] for d in listed[1:]] == ["p0"]  # the open pin stays too
