"""Every rule of shared/LLHLS_RULES.md, checked on real packager output."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import pytest

from packager.fmp4 import SYNC_SAMPLE_FLAGS
from packager.live import PackagerConfig

from .boxes import iter_boxes, trafs
from .m3u8 import Playlist, parse

pytestmark = pytest.mark.asyncio


def media_lines(pl: Playlist):
    """(segments, parts by msn) as listed: parts keyed by their URI's msn."""
    return pl.tags("#EXTINF"), pl.tags("#EXT-X-PART")


async def test_header_tags(make_package) -> None:
    feed = make_package()
    feed.until(8)
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        assert int(pl.one("#EXT-X-VERSION").value) >= 6  # S 8: fMP4 parts need 6
        part_target = float(pl.one("#EXT-X-PART-INF").attrs["PART-TARGET"])  # S 4.4.3.7
        assert part_target == 0.334
        sc = pl.one("#EXT-X-SERVER-CONTROL").attrs
        assert sc["CAN-BLOCK-RELOAD"] == "YES"
        assert float(sc["PART-HOLD-BACK"]) >= 3 * part_target - 1e-9  # A 14.3
        td = int(pl.one("#EXT-X-TARGETDURATION").value)
        assert float(sc["CAN-SKIP-UNTIL"]) >= 6 * td  # S 4.4.3.8
        assert pl.one("#EXT-X-MAP").attrs["URI"] == "init.mp4"


async def test_server_control_identical_across_renditions(make_package) -> None:
    feed = make_package()
    feed.until(5)
    values = {
        parse(r.playlist()).one("#EXT-X-SERVER-CONTROL").value
        for r in feed.package.renditions.values()
    }
    assert len(values) == 1  # S 6.2.4


async def test_parts_durations_and_independence(make_package) -> None:
    feed = make_package()
    feed.until(12)
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        target = float(pl.one("#EXT-X-PART-INF").attrs["PART-TARGET"])
        segments = _segments(pl)
        assert segments, "no segment listed"
        for seg in segments:
            for i, part in enumerate(seg["parts"]):
                a = part.attrs
                d = float(a["DURATION"])
                assert d <= target + 1e-9  # S 4.4.4.9
                last_of_segment = i == len(seg["parts"]) - 1 and seg["uri"] is not None
                if a.get("INDEPENDENT") != "YES" and not last_of_segment:
                    assert d >= 0.85 * target  # S 4.4.4.9
                first = trafs(r.files[a["URI"]])[0]
                starts_with_idr = first.flags[0] == SYNC_SAMPLE_FLAGS
                # INDEPENDENT=YES exactly on parts that start with an IDR (hls.js #7782).
                assert (a.get("INDEPENDENT") == "YES") == starts_with_idr


def _segments(pl: Playlist) -> list[dict]:
    """Group the listed lines into segments: pdt, parts, extinf, uri (None while open)."""
    out: list[dict] = []
    cur: dict = {"parts": [], "pdt": None, "extinf": None, "uri": None, "order": []}
    for line in pl.lines:
        if line.tag == "#EXT-X-PROGRAM-DATE-TIME":
            assert cur["pdt"] is None and not cur["parts"], "PDT must precede the segment's parts"
            cur["pdt"] = line.value
        elif line.tag == "#EXT-X-PART":
            cur["parts"].append(line)
        elif line.tag == "#EXTINF":
            cur["extinf"] = float(line.value.rstrip(","))
        elif line.tag == "":
            cur["uri"] = line.value
            out.append(cur)
            cur = {"parts": [], "pdt": None, "extinf": None, "uri": None, "order": []}
    if cur["parts"] or cur["pdt"]:
        out.append(cur)
    return out


async def test_parts_before_extinf_and_segment_is_its_parts(make_package) -> None:
    feed = make_package()
    feed.until(7)
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        complete = [s for s in _segments(pl) if s["uri"] is not None and s["parts"]]
        assert complete
        for seg in complete:
            # S 3.2: a segment holds exactly the samples of its parts, same bytes.
            joined = b"".join(r.files[p.attrs["URI"]] for p in seg["parts"])
            assert r.files[seg["uri"]] == joined
            total = sum(float(p.attrs["DURATION"]) for p in seg["parts"])
            assert seg["extinf"] == pytest.approx(total, abs=1e-4)


async def test_preload_hint(make_package) -> None:
    feed = make_package()
    feed.until(5)
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        hint = pl.one("#EXT-X-PRELOAD-HINT").attrs  # exactly one (S 4.4.5.3)
        assert hint["TYPE"] == "PART"
        listed = [p.attrs["URI"] for p in pl.tags("#EXT-X-PART")]
        assert hint["URI"] not in listed and hint["URI"] not in r.files
        msn, idx, _ = hint["URI"].split(".")
        last_msn, last_idx, _ = listed[-1].split(".")
        assert (int(msn), int(idx)) in {(int(last_msn), int(last_idx) + 1), (int(last_msn) + 1, 0)}
    feed.finish()
    feed.package.finish()
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        assert pl.tags("#EXT-X-PRELOAD-HINT") == []  # none after ENDLIST
        assert pl.one("#EXT-X-ENDLIST")


async def test_program_date_time_everywhere_and_consistent(make_package) -> None:
    feed = make_package()
    feed.until(9)
    pdts = {}
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        segs = _segments(pl)
        msn0 = int(pl.one("#EXT-X-MEDIA-SEQUENCE").value)
        for i, seg in enumerate(segs):
            assert seg["pdt"] is not None  # A 8.4
            pdts.setdefault(msn0 + i, set()).add(seg["pdt"])
    assert all(len(v) == 1 for v in pdts.values()), pdts  # same instant on every rendition


async def test_rendition_reports(make_package) -> None:
    feed = make_package()
    feed.until(6.5)
    rends = feed.package.renditions
    for name, r in rends.items():
        pl = parse(r.playlist())
        reports = {x.attrs["URI"]: x.attrs for x in pl.tags("#EXT-X-RENDITION-REPORT")}
        assert set(reports) == {f"../{o}/index.m3u8" for o in rends if o != name}  # S 4.4.5.4
        for other in rends:
            if other == name:
                continue
            opl = parse(rends[other].playlist())
            last = opl.tags("#EXT-X-PART")[-1].attrs["URI"].split(".")
            rep = reports[f"../{other}/index.m3u8"]
            assert (rep["LAST-MSN"], rep["LAST-PART"]) == (last[0], last[1])


async def test_extinf_target_duration_idr_alignment(make_package) -> None:
    feed = make_package()
    feed.until(15)
    starts = {}
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        td = int(pl.one("#EXT-X-TARGETDURATION").value)
        for seg in _segments(pl):
            if seg["extinf"] is not None:
                assert round(seg["extinf"]) <= td  # S 4.4.3.1
            if seg["uri"] is None:
                continue
            first = trafs(r.files[seg["uri"]])[0]
            assert first.flags[0] == SYNC_SAMPLE_FLAGS  # segments start with an IDR
            starts.setdefault(seg["uri"], set()).add(first.base_dts)
    assert all(len(v) == 1 for v in starts.values())  # IDRs aligned across renditions


async def test_window_and_part_pruning(make_package) -> None:
    feed = make_package(PackagerConfig(window_segments=6))
    feed.until(15.9)
    for r in feed.package.renditions.values():
        pl = parse(r.playlist())
        td = int(pl.one("#EXT-X-TARGETDURATION").value)
        segs = _segments(pl)
        complete = [s for s in segs if s["uri"]]
        assert len(complete) >= 6  # Apple: at least 6 segments
        assert sum(s["extinf"] for s in complete) >= 3 * td
        # S 6.2.2: no part tags more than 3 target durations from the end.
        age = 0.0
        for seg in reversed(segs):
            if age > 3 * td:
                assert seg["parts"] == []
            age += sum(float(p.attrs["DURATION"]) for p in seg["parts"]) or (seg["extinf"] or 0)
        assert any(s["parts"] == [] for s in segs)  # some parts were dropped from the list
        # ... but their files stay servable a while longer.
        dropped = [s for s in segs if not s["parts"]][-1]
        msn = dropped["uri"].split(".")[0]
        assert f"{msn}.0.m4s" in r.files


async def test_delta_update(make_package) -> None:
    feed = make_package()
    feed.until(15.5)
    r = feed.package.renditions["180p"]
    full, delta = parse(r.playlist()), parse(r.playlist(skip="YES"))
    skipped = int(delta.one("#EXT-X-SKIP").attrs["SKIPPED-SEGMENTS"])
    assert skipped > 0
    assert int(delta.one("#EXT-X-VERSION").value) >= 9  # S 8
    assert [x.value for x in delta.tags("")] == [x.value for x in full.tags("")][skipped:]
    can_skip = float(full.one("#EXT-X-SERVER-CONTROL").attrs["CAN-SKIP-UNTIL"])
    remaining = sum(float(x.value.rstrip(",")) for x in delta.tags("#EXTINF"))
    assert remaining >= can_skip - 2  # only segments beyond the skip boundary are skipped


async def test_multivariant(make_package) -> None:
    feed = make_package()
    feed.until(5)
    pl = parse(feed.package.multivariant())
    variants = pl.tags("#EXT-X-STREAM-INF")
    assert len(variants) == 2
    for v in variants:
        a = v.attrs
        assert int(a["BANDWIDTH"]) >= int(a["AVERAGE-BANDWIDTH"]) > 0
        assert a["CODECS"] == "avc1.640015,mp4a.40.2"
        w, h = map(int, a["RESOLUTION"].split("x"))
        assert Fraction(w, h) == Fraction(9, 16)  # A 1.33: one aspect ratio
        assert float(a["FRAME-RATE"]) == pytest.approx(30)
    assert [x.value for x in pl.tags("")] == ["270p/index.m3u8", "180p/index.m3u8"]


async def test_fmp4_decodes_every_frame(make_package, media) -> None:
    feed = make_package()
    feed.finish()
    r = feed.package.renditions["180p"]
    pl = parse(r.playlist())
    blob = r.files["init.mp4"] + b"".join(r.files[u.value] for u in pl.tags(""))
    with av.open(io.BytesIO(blob)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    segs = len(pl.tags(""))
    # Every frame of the listed segments decodes (60 frames per 2 s segment).
    assert frames == pytest.approx(segs * 60, abs=60) and frames > 0
    # tfdt is continuous across parts, per track.
    ends: dict[int, int] = {}
    for u in pl.tags(""):
        data = r.files[u.value]
        kinds = [k for k, _ in iter_boxes(data)]
        assert kinds == [b"moof", b"mdat"] * (len(kinds) // 2)  # one CMAF chunk per part
        for t in trafs(data):
            if t.track_id in ends:
                assert t.base_dts == ends[t.track_id]
            ends[t.track_id] = t.base_dts + sum(t.durations)


async def test_bframe_composition_offsets(media) -> None:
    from packager.live import LivePackage

    from .conftest import Feeder
    from .media import encode_video

    info, packets = encode_video("180p", 4, bframes=2)
    package = LivePackage("b", PackagerConfig())
    feed = Feeder(package, {"180p": (info, packets)})
    feed.finish()
    r = package.renditions["180p"]
    ctos = []
    for name, data in r.files.items():
        if name.count(".") == 2:
            for t in trafs(data):
                ctos += t.ctos
    assert any(c != 0 for c in ctos)
    blob = r.files["init.mp4"] + b"".join(r.files[s.uri] for s in r.state.segments)
    with av.open(io.BytesIO(blob)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert len(pts) == len(packets)
    assert pts == sorted(pts)
    assert math.isclose(pts[1] - pts[0], 3000)


async def test_renditions_updated_within_one_part_of_each_other(make_package) -> None:
    feed = make_package()
    for second in (3, 5.2, 7.7, 9.1):
        feed.until(second)
        ends = []
        for r in feed.package.renditions.values():
            seg = r.state.segments[-1]
            ends.append(seg.start + seg.duration)
        # LLHLS_RULES: all renditions within one part target of each other.
        assert max(ends) - min(ends) <= PackagerConfig().part_target
