"""Recorder, file store and VOD playlists, driven by the real live packager and real encodes."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path

import pytest

from packager.live import LivePackage, PackagerConfig
from packager.recorder import MANIFEST, Recorder, Recording
from packager.stores import StoreUnavailable, local
from packager.stores.local import FileStore
from packager.tags import Tag
from packager.vod import Manifest, render_vod_media_playlist, tags_in

from .conftest import SECONDS, Feeder


def record(media: dict, store: FileStore, queue_size: int = 256) -> tuple[Feeder, Recording]:
    recorder = Recorder(store, queue_size=queue_size)
    package = LivePackage("shop", PackagerConfig())
    recording = recorder.open("shop", package.config.target_duration)
    package.sink = recording
    return Feeder(package, media), recording


async def drained(recording: Recording) -> None:
    for _ in range(500):
        if recording.queue_depth == 0 and not recording._dirty:
            await asyncio.sleep(0.05)
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the recording never caught up")


async def test_file_store_keys_atomicity_and_delete(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "rec")
    await store.start()
    await store.put("r1/360p/init.mp4", b"init", "video/mp4")
    await store.put("r1/360p/7.m4s", (b"s", b"", b"eg"), "video/iso.segment")  # its parts
    await store.put("r2/manifest.json", b"{}", "application/json")
    (tmp_path / "rec" / "r1" / "360p" / ".8.m4s.123.tmp").write_bytes(b"half")  # a crash's
    assert await store.list("r1/") == ["r1/360p/7.m4s", "r1/360p/init.mp4"]
    assert await store.get("r1/360p/7.m4s") == b"seg"
    assert await store.get("r1/360p/9.m4s") is None
    for bad in ("../x", "/etc/passwd", "r1/../../x", "r1//x", "r1/.hidden", ""):
        with pytest.raises(ValueError):
            await store.put(bad, b"x", "x")
    assert await store.delete_prefix("r1/") == 2
    assert not (tmp_path / "rec" / "r1").exists()
    assert await store.list("") == ["r2/manifest.json"]


async def test_file_store_commits_concurrent_puts_together_and_fails_only_the_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "WRITER_IDLE", 0.2)
    store = FileStore(tmp_path / "rec")
    await store.start()
    (tmp_path / "rec" / "blocked").write_bytes(b"")  # a file where a directory should be
    keys = [f"r/{n % 7}/{n}.m4s" for n in range(150)]  # more than one commit's worth
    bad = "blocked/1.m4s"
    results = await asyncio.gather(
        *(store.put(k, (k.encode(), b"|seg"), "video/iso.segment") for k in [*keys, bad]),
        return_exceptions=True,
    )
    assert results[:-1] == [None] * len(keys)
    assert isinstance(results[-1], StoreUnavailable) and "Not a directory" in str(results[-1])
    assert await store.list("r/") == sorted(keys)  # no temp file left beside them
    assert [await store.get(k) for k in keys[:3]] == [f"{k}|seg".encode() for k in keys[:3]]
    assert store.health().failed == 1
    # Idle, the writer thread ends; the next put starts another.
    for _ in range(100):
        if not store.writer_running:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the writer thread outlived its idle time")
    await store.put("r/late.m4s", b"late", "video/iso.segment")
    assert await store.get("r/late.m4s") == b"late"


async def test_store_failure_has_its_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = FileStore(tmp_path / "file" / "rec")  # a file where a directory should be
    with pytest.raises(StoreUnavailable, match="Not a directory"):
        await store.start()
    assert store.health().failed == 1 and "Not a directory" in (store.health().last_error or "")


async def test_recording_follows_the_live_segments(media: dict, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    feed, recording = record({n: media[n] for n in ("270p", "180p", "audio")}, store)
    feed.finish()
    await drained(recording)
    # Written as the show goes: before close, manifest and segments are all there.
    stored = Manifest.from_json((tmp_path / recording.id / MANIFEST).read_bytes())
    for rendition in stored.renditions:
        live = feed.package.renditions[rendition.name].state.segments
        complete = [s for s in live if s.complete]
        assert [s.msn for s in rendition.segments] == [s.msn for s in complete]
        assert [s.duration for s in rendition.segments] == [
            round(float(s.duration), 6) for s in complete
        ]
        for seg in complete:
            assert (tmp_path / recording.id / rendition.name / f"{seg.msn}.m4s").read_bytes() == (
                feed.package.renditions[rendition.name].files[seg.uri]
            )
    assert abs(stored.duration - SECONDS) < 0.05
    assert [r.name for r in stored.renditions] == ["270p", "180p"]  # highest bitrate first
    await recording.close()
    assert recording.state == "ready"


async def test_recovery_rebuilds_what_the_manifest_missed(media: dict, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    feed, recording = record({n: media[n] for n in ("180p", "audio")}, store)
    feed.finish()
    await drained(recording)
    full = Manifest.from_json((tmp_path / recording.id / MANIFEST).read_bytes())
    # A crash: the last manifest rewrite lagged three segments behind the files.
    lagging = Manifest.from_json(full.to_json())
    for r in lagging.renditions:
        del r.segments[-3:]
    (tmp_path / recording.id / MANIFEST).write_bytes(lagging.to_json())
    recovered = await Recorder(FileStore(tmp_path)).recover(recording.id)
    assert recovered is not None and recovered.ended_at is not None
    for got, want in zip(recovered.renditions, full.renditions, strict=True):
        assert [s.msn for s in got.segments] == [s.msn for s in want.segments]
        for g, w in zip(got.segments, want.segments, strict=True):
            assert abs(g.duration - w.duration) < 1e-6 and abs(g.start - w.start) < 1e-6
            assert abs(g.program_date_time - w.program_date_time) < 1e-3
            assert g.bytes == w.bytes and not g.discontinuity


async def test_full_queue_degrades_and_marks_a_discontinuity(media: dict, tmp_path: Path) -> None:
    gate = asyncio.Event()

    class SlowStore(FileStore):
        async def put(self, key: str, data: bytes, content_type: str) -> None:
            await gate.wait()
            await super().put(key, data, content_type)

    feed, recording = record({n: media[n] for n in ("180p", "audio")}, SlowStore(tmp_path), 3)
    feed.until(9)
    assert recording.degraded is not None and "queue full" in recording.degraded
    assert recording.recorder.stats.failures["shop", "queue_full"] == recording.dropped > 0
    gate.set()
    await drained(recording)
    feed.finish()
    await drained(recording)
    segs = recording.manifest.renditions[0].segments
    msns = [s.msn for s in segs]
    after_gap = [s for prev, s in zip(msns, segs[1:], strict=False) if s.msn != prev + 1]
    assert after_gap and all(s.discontinuity for s in after_gap)
    assert sum(s.discontinuity for s in segs) == len(after_gap)
    await recording.close()
    assert recording.state == "ready"  # degraded, still playable


def _tag(tag_id: str, pdt: float) -> Tag:
    return Tag(tag_id, "product", Fraction(0), pdt, {"title": "x"}, product_id="sku")


async def test_vod_playlists_vod_event_dateranges(media: dict, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    feed, recording = record({n: media[n] for n in ("180p", "audio")}, store)
    feed.finish()
    await drained(recording)
    manifest = recording.manifest
    rendition = manifest.renditions[0]
    first, end = manifest.time_range or (0, 0)
    tags = [_tag("before", first - 1), _tag("t1", first + 1.5), _tag("t2", end - 0.5)]
    tags.append(_tag("after", end + 1))
    inside = tags_in(tags, manifest.time_range)
    assert [t.id for t in inside] == ["t1", "t2"]
    event = render_vod_media_playlist(manifest, rendition, inside, ended=False)
    vod = render_vod_media_playlist(manifest, rendition, inside, ended=True)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "#EXT-X-ENDLIST" not in event
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod.endswith("#EXT-X-ENDLIST\n")
    lines = vod.splitlines()
    assert [x for x in lines if x.startswith("#EXT-X-DATERANGE")] == [t.daterange for t in inside]
    assert lines.count("#EXT-X-DISCONTINUITY") == 0
    assert sum(x.startswith("#EXT-X-PROGRAM-DATE-TIME") for x in lines) == len(rendition.segments)
    assert not any(x.startswith(("#EXT-X-PART", "#EXT-X-PRELOAD-HINT")) for x in lines)
    rendition.segments[3].discontinuity = True
    redone = render_vod_media_playlist(manifest, rendition, inside, ended=True).splitlines()
    assert redone.count("#EXT-X-DISCONTINUITY") == 1
    assert json.loads(manifest.to_json())["version"] == 1
