"""An audio-only publish goes live as an audio-only LL-HLS stream (no waiting for video)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from packager.playlist import parse_media_playlist

from .conftest import (
    Origin,
    Receiver,
    ffmpeg_publish_args,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from .test_continuity import SLATE_WINDOW, api, fetch, receiver, serving, until, watching
from .test_switching import assert_pdt_grid, timed_parts, timed_segments

__all__ = ["receiver"]  # fixture used here

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


def audio_only_args(url: str, hz: int) -> list[str]:
    """A real-time audio-only publish of a ``hz`` sine (``-re`` on the audio input itself:
    with no video mapped, nothing else paces it)."""
    args = ffmpeg_publish_args(url, seconds=60, video=False, realtime=True)
    sine = args.index("sine=frequency=440:sample_rate=48000")
    args[sine] = f"sine=frequency={hz}:sample_rate=48000"
    args[sine - 3 : sine - 3] = ["-re"]  # before its "-f lavfi -i"
    return args


def dominant_hz(blob: bytes) -> float:
    """The loudest frequency of the AAC audio in ``blob`` (init + parts)."""
    with av.open(io.BytesIO(blob)) as container:
        samples = np.concatenate(
            [f.to_ndarray()[0] for f in container.decode(audio=0)]  # first channel
        )
        rate = container.streams.audio[0].rate
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


async def test_audio_only_inputs_switch_at_the_next_audio_frame(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Two audio-only inputs (sines of 440 Hz and 1,500 Hz): /switch answers 200 at once (every
    AAC frame is a sync point, no keyframe is waited for); after the DISCONTINUITY the audio is
    the other input's, and the PDT grid runs on part by part across the switch."""
    async with serving(tmp_path, receiver.url, SLATE_WINDOW) as origin:
        main = await start_ffmpeg(audio_only_args(origin.rtmp_url(await origin.key()), 440))
        status, created = await api(
            origin, "POST", "/api/v1/streams/demo/inputs", {"name": "closeup"}
        )
        assert status == 201, created
        closeup = await start_ffmpeg(audio_only_args(origin.rtmp_url(created["stream_key"]), 1500))
        try:
            streams = origin.server.streams

            def ready() -> bool:
                package = origin.server.pipelines.package("demo")
                held = streams.input_session("demo", "closeup")
                return package is not None and bool(package.renditions) and held is not None

            await until(ready, 30, "the audio-only show and the closeup input")
            package = origin.server.pipelines.package("demo")
            assert package is not None
            [name] = list(package.renditions)
            async with watching(origin, [name]) as watches:
                watch = watches[name]
                await until(lambda: len(watch.parts) >= 3, 20, "parts")
                status, answer = await api(
                    origin, "POST", "/api/v1/streams/demo/switch", {"input": "closeup"}
                )
                assert status == 200, answer
                assert answer["switched"] is True and answer["program_date_time"], answer
                assert package.input == "closeup"
                # The switch's own playlist, while the old input's parts are still listed.
                await until(lambda: watch.discontinuity == 1, 10, "the closeup's first part")
                listed = watch.text
                # The main input's last complete segment, fetched while it is still listed.
                [*_, (pdt, duration, uri, _)] = [s for s in timed_segments(listed) if s[3] == 0]
                init = await fetch(origin, name, "init.mp4")
                before = await fetch(origin, name, uri)
                await until(
                    lambda: sum(1 for _, d in watch.parts.values() if d == 1) >= 3,
                    10,
                    "the closeup's parts",
                )
                new = [p for p in timed_parts(watch.text) if p[3] == 1]
                after = b"".join([await fetch(origin, name, p[2]) for p in new[:3]])
                assert abs(dominant_hz(init + before) - 440) < 30
                assert abs(dominant_hz(init + after) - 1500) < 30
                # The PDT grid runs on: the closeup's first part starts where main's last
                # segment ends (half an AAC frame), and its parts follow one another.
                step = new[0][0] - (pdt + duration)
                assert abs(step) < 512 / 48000, f"PDT steps {step * 1000:+.1f} ms at the switch"
                assert_pdt_grid({name: watch.text}, 1024 / 48000, across=False)
        finally:
            await stop_ffmpeg(main)
            await stop_ffmpeg(closeup)
