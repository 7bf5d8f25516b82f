"""Replay costs: recording a passthrough stream, and the VOD playlist of a 2-hour show.

1. CPU of recording per passthrough stream: the same 1080×1920 passthrough show (H.264 at
   6 Mb/s + AAC, 2 s segments) packaged by ``LivePackage`` as fast as it goes, without a
   recording and with one (``Recording`` → ``FileStore``: to_thread writes, temp file + fsync +
   rename, the manifest rewritten per batch). Process CPU time (every thread) over the whole
   show; the ratio is recorded / not recorded in the same run, rounds alternating. The baseline
   is packaging only (no RTMP ingest, no hub, no HTTP), so the ratio overstates the cost for a
   whole stream: it isolates the recorder's own work. The issue's figure (goal ≤ 1.05×) is the
   whole origin's, in ``test_bench_recording.py``.
2. VOD media playlist render for a 2-hour show (3,600 segments, 200 product tags), against the
   live window's playlist render in the same run; plus parsing the show's manifest (what the
   first request after a restart pays, later ones hit the cache).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ingest.media import MediaKind
from packager.live import LivePackage, PackagerConfig
from packager.playlist import render_media_playlist
from packager.recorder import Recorder
from packager.stores.local import FileStore
from packager.tags import Tag
from packager.vod import Manifest, RenditionRecord, SegmentRecord, render_vod_media_playlist
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, RenditionInfo

from .test_bench_playlist import REPORTS, STATE

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
SHOW_SECONDS = int(os.environ.get("SHOPCAST_BENCH_REPLAY_SECONDS", 4 if SMOKE else 60))
ROUNDS = int(os.environ.get("SHOPCAST_BENCH_REPLAY_ROUNDS", 1 if SMOKE else 5))
FPS, BITRATE, AUDIO_RATE = 30, 6_000_000, 48_000
EPOCH = 1_790_000_000.0
#: An avcC record (High profile 4.0, 1080×1920): the init segment copies it, nothing parses it.
AVCC = bytes.fromhex(
    "01640028ffe1001967640028acd940780227e5c04400000303e80000ea603c60c65801000468ebecb2"
)


def passthrough_show(seconds: int) -> tuple[list[RenditionInfo], list[EncodedPacket]]:
    """Packets shaped like a 6 Mb/s 1080×1920 passthrough rung (IDR every 2 s) and AAC, in
    arrival order. Payloads are random bytes of realistic sizes: the packager and the recorder
    never look inside them."""
    rng = random.Random(7)
    video = RenditionInfo(
        name="1080p",
        kind=MediaKind.VIDEO,
        codec="h264",
        codec_string="avc1.640028",
        timescale=VIDEO_TIMESCALE,
        extradata=AVCC,
        width=1080,
        height=1920,
        bitrate=BITRATE,
        fps=Fraction(FPS),
        passthrough=True,
    )
    audio = RenditionInfo(
        name="audio",
        kind=MediaKind.AUDIO,
        codec="aac",
        codec_string="mp4a.40.2",
        timescale=AUDIO_RATE,
        extradata=bytes.fromhex("1190"),
        bitrate=128_000,
        sample_rate=AUDIO_RATE,
        channels=2,
    )
    frame_bytes = BITRATE // 8 // FPS
    events: list[tuple[float, EncodedPacket]] = []
    ticks = VIDEO_TIMESCALE // FPS
    for n in range(seconds * FPS):
        key = n % (2 * FPS) == 0
        size = frame_bytes * 4 if key else int(frame_bytes * rng.uniform(0.7, 1.1))
        t = n * ticks
        packet = EncodedPacket("1080p", t, t, ticks, key, rng.randbytes(size), arrival=0.0)
        events.append((n / FPS, packet))
    for n in range(seconds * AUDIO_RATE // 1024):
        t = n * 1024
        packet = EncodedPacket("audio", t, t, 1024, True, rng.randbytes(384), arrival=0.0)
        events.append((t / AUDIO_RATE, packet))
    events.sort(key=lambda e: e[0])
    return [video, audio], [p for _, p in events]


async def package_show(
    infos: list[RenditionInfo], packets: list[EncodedPacket], directory: Path | None
) -> tuple[float, int]:
    """CPU seconds (all threads) to package the show, recording it into ``directory`` if set;
    and the bytes recorded."""
    package = LivePackage("bench", PackagerConfig(), clock=lambda: EPOCH)
    recording = None
    if directory is not None:
        recording = Recorder(FileStore(directory), queue_size=4096).open("bench", 2)
        package.sink = recording
    started = time.process_time()
    for info in infos:
        package.on_rendition(info)
    package.on_ladder(infos)
    for i, packet in enumerate(packets):
        package.on_packet(packet)
        if i % 64 == 0:
            await asyncio.sleep(0)  # the loop runs the writer between bursts, as live
    package.on_end()
    package.finish()
    recorded = 0
    if recording is not None:
        await recording.close()
        assert recording.state == "ready" and recording.dropped == 0
        recorded = recording.manifest.byte_count
    return time.process_time() - started, recorded


def test_bench_recording_cpu_per_passthrough_stream(benchmark: Any, tmp_path: Path) -> None:
    infos, packets = passthrough_show(SHOW_SECONDS)
    plain: list[float] = []
    recorded: list[float] = []
    size = 0

    def run() -> None:
        nonlocal size
        for r in range(ROUNDS):
            plain.append(asyncio.run(package_show(infos, packets, None))[0])
            cpu, size = asyncio.run(package_show(infos, packets, tmp_path / f"r{r}"))
            recorded.append(cpu)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = statistics.median(recorded) / statistics.median(plain)
    per_hour = (statistics.median(recorded) - statistics.median(plain)) * 3600 / SHOW_SECONDS
    assert size > SHOW_SECONDS * BITRATE / 8 * 0.9  # the show was recorded whole
    benchmark.extra_info.update(
        baseline="packaging only (the whole-origin figure: test_bench_recording.py)",
        show_seconds=SHOW_SECONDS,
        cpu_s_plain=round(statistics.median(plain), 4),
        cpu_s_recorded=round(statistics.median(recorded), 4),
        recorded_bytes=size,
        recording_cpu_s_per_stream_hour=round(per_hour, 2),
        summary={
            "ratio": ratio,
            "goal": 1.05,
            "reference": "the same show packaged without recording (packaging only: no "
            "ingest, hub or HTTP), same run",
            "value": f"recording costs {ratio:.3f}× the packaging CPU "
            f"(+{per_hour:.1f} CPU-s per stream-hour at 6 Mb/s)",
        },
    )
    print(f"\nrecording: {ratio:.3f}× packaging CPU, +{per_hour:.1f} CPU-s per stream-hour")


def two_hour_show(segments: int = 3600, tags: int = 200) -> tuple[Manifest, list[Tag]]:
    rendition = RenditionRecord(
        "1080p", "avc1.640028,mp4a.40.2", 6_600_000, 1080, 1920, 30.0, 90_000, 1
    )
    for n in range(segments):
        rendition.segments.append(
            SegmentRecord(1000 + n, 2.0, EPOCH + 2 * n, n == 1800, 1_500_000, 10.0 + 2 * n)
        )
    manifest = Manifest("b" * 22, "bench", EPOCH, 2, [rendition], ended_at=EPOCH + 2 * segments)
    step = 2 * segments / tags
    shown = [
        Tag(
            f"t{i:04d}",
            "product",
            Fraction(0),
            EPOCH + i * step,
            {"title": f"Product {i}", "price": "19.99", "currency": "EUR"},
            product_id=f"sku-{i}",
        )
        for i in range(tags)
    ]
    return manifest, shown


MANIFEST, TAGS = two_hour_show(360 if SMOKE else 3600, 20 if SMOKE else 200)
LIVE: dict[str, float] = {}


def test_bench_live_playlist_reference(benchmark: Any) -> None:
    benchmark(render_media_playlist, STATE, REPORTS)
    LIVE["median"] = benchmark.stats.stats.median
    benchmark.extra_info.update(summary={"value": "live window render (reference)"})


@pytest.mark.parametrize("case", ["render", "parse-manifest"])
def test_bench_vod_playlist_two_hour_show(benchmark: Any, case: str) -> None:
    rendition = MANIFEST.renditions[0]
    if case == "render":
        text = benchmark(render_vod_media_playlist, MANIFEST, rendition, TAGS, ended=True)
        assert text.count("#EXTINF:") == len(rendition.segments)
        assert text.count("#EXT-X-DATERANGE:") == len(TAGS)
    else:
        data = MANIFEST.to_json()
        parsed = benchmark(Manifest.from_json, data)
        assert len(parsed.renditions[0].segments) == len(rendition.segments)
    median = benchmark.stats.stats.median
    live = LIVE.get("median")
    ratio = median / live if live else None
    benchmark.extra_info.update(
        case=case,
        segments=len(rendition.segments),
        tags=len(TAGS),
        ms=round(median * 1000, 2),
        summary={
            "ratio": ratio,
            "reference": "one live-window playlist render in the same run",
            "value": f"{case} of a {len(rendition.segments)}-segment, {len(TAGS)}-tag show: "
            f"{median * 1000:.2f} ms",
        },
    )
