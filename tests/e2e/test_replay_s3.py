"""Replay into an S3-compatible store: ``shopcast serve`` records a real ffmpeg show into
``rclone serve s3`` on 127.0.0.1, plays it back as VOD from the bucket, cuts a clip into it,
deletes it all, and keeps the live show going when S3 dies in the middle."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from benchmarks.harness.s3_server import S3Server
from benchmarks.harness.serve_env import ServeEnv
from shopcast.config import StoreSection
from shopcast.store import make_store

from .conftest import API_TOKEN, ffmpeg_publish_args, requires_ffmpeg, start_ffmpeg, stop_ffmpeg
from .test_replay import get, recordings, segments, serve, text, wait_recording

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PREFIX = "shows"
FPS = 30
#: Seconds of the show S3 dies in: room for uploads, the kill, three more live segments.
SHOW = 20


async def stream_key(tmp_path: Path) -> str:
    store = make_store(StoreSection(path=str(tmp_path / "store.sqlite3")))
    await store.open()
    key = (await store.create_stream("demo")).stream_key
    await store.close()
    return key


def spool_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "recordings" / "s3-spool").rglob("*") if p.is_file()]


async def metric(http: aiohttp.ClientSession, srv: ServeEnv, name: str) -> float | None:
    found = re.search(
        rf'^{name}\{{store="s3"\}} (\S+)$', await text(http, f"{srv.http}/metrics"), re.M
    )
    return float(found.group(1)) if found else None


async def live_msn(http: aiohttp.ClientSession, srv: ServeEnv) -> int:
    """The newest complete segment of the live 180p playlist (-1 before the first)."""
    status, body, _ = await get(http, f"{srv.http}/hls/demo/180p/index.m3u8")
    listed = segments(body.decode()) if status == 200 else []
    return int(listed[-1][0].split(".")[0]) if listed else -1


async def until(check: Any, timeout: float = 40.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)
    return result


async def decode_vod(http: aiohttp.ClientSession, vod: str, tmp: Path) -> dict[str, int]:
    """Frames PyAV decodes from each rendition's init + segments, fetched through /vod/."""
    master = await text(http, f"{vod}/master.m3u8")
    frames = {}
    for uri in re.findall(r"^(\S+)/index\.m3u8$", master, re.M):
        playlist = await text(http, f"{vod}/{uri}/index.m3u8")
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist and "#EXT-X-ENDLIST" in playlist
        data = (await get(http, f"{vod}/{uri}/init.mp4"))[1]
        listed = segments(playlist)
        for seg, *_ in listed:
            status, body, headers = await get(http, f"{vod}/{uri}/{seg}")
            assert status == 200, (seg, status)
            assert "immutable" in headers.get("Cache-Control", ""), headers
            data += body
        path = tmp / f"{uri}.mp4"
        path.write_bytes(data)
        with av.open(str(path)) as container:
            frames[uri] = sum(1 for _ in container.decode(container.streams.video[0]))
        duration = sum(d for _, d, _, _ in listed)
        assert abs(frames[uri] - duration * FPS) <= 1, (uri, frames[uri], duration)
    return frames


async def test_show_recorded_into_s3_plays_back_and_deletes(
    tmp_path: Path, s3_server: S3Server
) -> None:
    key = await stream_key(tmp_path)
    env = s3_server.env(prefix=PREFIX)
    async with serve(tmp_path, 1, **env) as (_, srv), aiohttp.ClientSession(headers=AUTH) as http:
        publisher = await start_ffmpeg(
            ffmpeg_publish_args(srv.rtmp_url(key), seconds=10, realtime=True)
        )
        try:

            async def segment_in_bucket() -> bool:
                objects = await s3_server.objects(f"{PREFIX}/")
                return any(k.endswith(".m4s") for k in objects)

            await until(segment_in_bucket, what="no segment reached the bucket")
            assert publisher.returncode is None  # during the show, not after it
        finally:
            assert await asyncio.wait_for(publisher.wait(), 40) == 0
        rec = await wait_recording(http, srv.http, ("ready", "failed"))
        assert rec["state"] == "ready" and rec["store"] == "s3", rec
        assert rec["degraded"] is None and rec["error"] is None, rec

        async def uploaded() -> bool:
            return not spool_files(tmp_path)

        await until(uploaded, what="the spool did not drain")
        assert await metric(http, srv, "shopcast_record_store_pending") == 0
        objects = await s3_server.objects(f"{PREFIX}/{rec['id']}/")
        assert f"{PREFIX}/{rec['id']}/manifest.json" in objects
        assert {k.split("/")[2] for k in objects if k.endswith("init.mp4")} == {
            r["name"] for r in rec["renditions"]
        }

        # Nothing left locally: the VOD is read back from the bucket.
        vod = f"{srv.http}/vod/{rec['id']}"
        frames = await decode_vod(http, vod, tmp_path)
        assert frames and min(frames.values()) >= 7 * FPS, frames

        # A clip is cut from the bucket's segments and goes into the same store.
        async with http.post(
            f"{srv.http}/api/v1/recordings/{rec['id']}/clips", json={"start": 2.0, "end": 5.0}
        ) as r:
            assert r.status == 201, await r.text()
            clip = await r.json()
        status, body, _ = await get(http, clip["url"])
        assert status == 200, (clip, status)
        clip_path = tmp_path / "clip.mp4"
        clip_path.write_bytes(body)
        with av.open(str(clip_path)) as container:
            clip_frames = sum(1 for _ in container.decode(container.streams.video[0]))
        assert abs(clip_frames - clip["duration"] * FPS) <= 1, (clip, clip_frames)

        async def clip_in_bucket() -> bool:
            objects = await s3_server.objects(f"{PREFIX}/clips/")
            return objects.get(f"{PREFIX}/clips/{clip['id']}.mp4") == body

        await until(clip_in_bucket, what="the clip did not reach the bucket")

        async with http.delete(f"{srv.http}/api/v1/recordings/{rec['id']}") as r:
            assert r.status == 204, await r.text()
        assert await s3_server.objects(f"{PREFIX}/") == {}
        assert (await get(http, f"{vod}/master.m3u8"))[0] == 404
        assert await recordings(http, srv.http) == []


async def test_s3_killed_mid_show_live_goes_on_recording_says_why(
    tmp_path: Path, s3_server: S3Server
) -> None:
    key = await stream_key(tmp_path)
    env = s3_server.env(prefix=PREFIX)
    async with serve(tmp_path, 1, **env) as (_, srv), aiohttp.ClientSession(headers=AUTH) as http:
        publisher = await start_ffmpeg(
            ffmpeg_publish_args(srv.rtmp_url(key), seconds=SHOW, realtime=True)
        )
        try:

            async def two_segments_uploaded() -> bool:
                objects = await s3_server.objects(f"{PREFIX}/")
                return sum(k.endswith(".m4s") for k in objects) >= 2

            await until(two_segments_uploaded, what="no segments reached the bucket")
            s3_server.kill()
            killed_at = await live_msn(http, srv)

            # The live playlist keeps advancing with S3 gone.
            async def advanced() -> bool:
                return await live_msn(http, srv) >= killed_at + 3

            await until(advanced, timeout=30, what="the live stream stalled when S3 died")
            assert publisher.returncode is None

            async def degraded() -> dict[str, Any] | None:
                recs = await recordings(http, srv.http)
                return recs[-1] if recs and recs[-1]["degraded"] else None

            rec = await until(degraded, timeout=30, what="the recording did not report S3")
            assert rec["state"] == "recording" and "s3 store" in rec["degraded"], rec
            assert (await metric(http, srv, "shopcast_record_store_degraded")) == 1
            assert (await metric(http, srv, "shopcast_record_store_failures_total") or 0) >= 1
            # Nothing deleted locally: every segment since the kill waits in the spool.
            waiting = [p.name for p in spool_files(tmp_path) if p.suffix == ".m4s"]
            assert len(waiting) >= 3, waiting
        finally:
            if publisher.returncode is None:
                assert await asyncio.wait_for(publisher.wait(), 40) == 0
            await stop_ffmpeg(publisher)
        rec = await wait_recording(http, srv.http, ("ready", "failed"))
        assert rec["state"] == "ready" and rec["degraded"], rec
        assert spool_files(tmp_path)  # still waiting for S3

        # S3 back: the backlog goes up, the spool empties, the VOD plays from the bucket.
        s3_server.start()

        async def drained() -> bool:
            return not spool_files(tmp_path)

        await until(drained, timeout=60, what="the backlog did not upload")
        frames = await decode_vod(http, f"{srv.http}/vod/{rec['id']}", tmp_path)
        assert frames and min(frames.values()) >= (SHOW - 3) * FPS, frames
