"""An audio-only publish goes live as an audio-only LL-HLS stream (no waiting for video)."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import av
import pytest

from packager.playlist import parse_media_playlist

from .conftest import Origin, ffmpeg_publish_args, requires_ffmpeg, start_ffmpeg, stop_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]


async def test_audio_only_publish_is_live_hls(origin: Origin) -> None:
    proc = await start_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(await origin.key()), seconds=8, video=False, realtime=True
        )
    )
    try:
        async with aiohttp.ClientSession() as http:
            master = ""
            for _ in range(100):  # while the publish is still running
                async with http.get(f"{origin.http}/hls/demo/master.m3u8") as r:
                    if r.status == 200:
                        master = await r.text()
                        break
                await asyncio.sleep(0.1)
            assert proc.returncode is None, "the playlists only appeared after the publish"
            assert 'CODECS="mp4a.40.2"' in master and "RESOLUTION" not in master
            uri = next(line for line in master.splitlines() if line.endswith(".m3u8"))
            media = ""
            for _ in range(50):
                async with http.get(f"{origin.http}/hls/demo/{uri}") as r:
                    media = await r.text()
                if len(parse_media_playlist(media).parts) >= 3:
                    break
                await asyncio.sleep(0.2)
            parts = [uri for _, _, uri in parse_media_playlist(media).parts]
            assert len(parts) >= 3
            base = f"{origin.http}/hls/demo/{uri.rsplit('/', 1)[0]}"
            blob = b""
            for name in ["init.mp4", *parts[:3]]:
                async with http.get(f"{base}/{name}") as r:
                    assert r.status == 200
                    blob += await r.read()
        with av.open(io.BytesIO(blob)) as c:
            frames = sum(1 for _ in c.decode(audio=0))
        assert frames > 20  # ~1 s of 1024-sample AAC frames decodes
    finally:
        await stop_ffmpeg(proc)
