"""WHIP ingest benchmarks: time to first playable media, and concurrent publishers held.

(a) An aiortc publisher (360×640 H.264 or VP8 + Opus tone, loopback) POSTs its offer; we time
    201, ICE/DTLS connected, the first video unit in the hub and the first LL-HLS part listed in
    the top rendition's playlist (= first playable media), over a few rounds.
(b) N publishers at once (180×320 H.264 + Opus, one stream each, published from a separate
    process so the server's event loop and GIL are its own) against a passthrough-only ladder
    (``rungs=()``, ``passthrough=True``): the server re-encodes Opus → AAC and repackages video.
    A step holds when every stream got ≥ 90 % of its video frames and audio frames over the
    measuring window and published ≥ 80 % of the parts its duration calls for. Steps grow until
    one fails or the last is reached.
Figures go to ``extra_info`` and a printed table; verdicts are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness.origin import Origin, make_config
from benchmarks.harness.whip_client import publish, unpublish, wait_connected
from ingest.media import MediaKind
from ingest.sessions import PublishSession
from packager.playlist import parse_media_playlist
from shopcast.config import WhipSection
from shopcast.server import ShopcastServer
from transcode.policy import LadderConfig

LOOPBACK = WhipSection(host_addresses=("127.0.0.1",), max_sessions=64, rate_burst=200)
SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"  # tests/benchmarks: tiny sizes
ROUNDS = 1 if SMOKE else 3
STEPS = (1, 2) if SMOKE else (1, 2, 4, 8, 12, 16)
WARM_UP = 2.0 if SMOKE else 4.0  # seconds after the last publisher connected before measuring
WINDOW = 2.0 if SMOKE else 6.0
VIDEO_FPS = 30
OPUS_FPS = 1000 / 20  # the publisher's 20 ms Opus packets, as they reach the hub


async def _start(tmp_path: Path, ladder: LadderConfig | None = None) -> Origin:
    config = replace(make_config(tmp_path, ladder), whip=LOOPBACK)
    server = ShopcastServer(config)
    await server.start()
    return Origin(server)


async def _first_part(http: aiohttp.ClientSession, base: str, stream_id: str) -> float:
    """Poll until the top rendition lists a part; the wall time it was first seen."""
    while True:
        async with http.get(f"{base}/hls/{stream_id}/master.m3u8") as resp:
            master = await resp.text() if resp.status == 200 else ""
        sized = re.findall(r"RESOLUTION=(\d+)x(\d+)[^\n]*\n([^#\n][^\n]*)", master)
        if sized:
            uri = max(sized, key=lambda m: int(m[0]) * int(m[1]))[2]
            async with http.get(f"{base}/hls/{stream_id}/{uri}") as resp:
                if resp.status == 200 and "#EXT-X-PART:" in await resp.text():
                    return time.time()
        await asyncio.sleep(0.01)


async def measure_first_media(tmp_path: Path, codec: str) -> list[dict[str, float]]:
    rounds = []
    for n in range(ROUNDS):
        origin = await _start(tmp_path / f"{codec}-{n}")
        first_unit: list[float] = []

        def attach(session: PublishSession, sink: list[float] = first_unit) -> None:
            reader = session.hub.add_reader("bench")

            async def watch() -> None:
                async for unit in reader:
                    if unit.kind is MediaKind.VIDEO and not unit.is_config:
                        sink.append(time.time())
                        return

            asyncio.get_running_loop().create_task(watch())

        origin.server.streams.on_session_start.append(attach)
        try:
            async with aiohttp.ClientSession() as http:
                t0 = time.time()
                pub = await publish(
                    http, origin.http, "demo", await origin.key(), video_codec=codec
                )
                t_201 = time.time()
                await wait_connected(pub.pc)
                t_conn = time.time()
                t_part = await asyncio.wait_for(_first_part(http, origin.http, "demo"), 30)
                rounds.append(
                    {
                        "answer_ms": (t_201 - t0) * 1000,
                        "connected_ms": (t_conn - t0) * 1000,
                        "first_unit_ms": (first_unit[0] - t0) * 1000 if first_unit else -1,
                        "first_part_ms": (t_part - t0) * 1000,
                    }
                )
                await unpublish(http, origin.http, pub)
        finally:
            await origin.server.close()
    return rounds


def test_bench_whip_time_to_first_media(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    """WHIP offer → first LL-HLS part listed (the earliest a player can start)."""

    def run() -> dict[str, list[dict[str, float]]]:
        return {c: asyncio.run(measure_first_media(tmp_path, c)) for c in ("H264", "VP8")}

    results = benchmark.pedantic(run, rounds=1, iterations=1)
    lines = [
        f"\nWHIP time to first playable media, ms (median of {ROUNDS}; 360x640 30 fps, "
        "ladder 360p+180p)",
        f"{'codec':<6}{'201':>8}{'ICE+DTLS':>10}{'1st unit':>10}{'1st part':>10}",
    ]
    info: dict[str, Any] = {}
    for codec, rounds in results.items():
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        info[codec] = {k: round(v, 1) for k, v in med.items()}
        lines.append(
            f"{codec:<6}{med['answer_ms']:>8.0f}{med['connected_ms']:>10.0f}"
            f"{med['first_unit_ms']:>10.0f}{med['first_part_ms']:>10.0f}"
        )
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print("\n".join(lines))


async def measure_step(tmp_path: Path, count: int) -> dict[str, Any]:
    ladder = LadderConfig(rungs=(), passthrough=True)
    origin = await _start(tmp_path / f"step{count}", ladder)
    server = origin.server
    streams = ["demo"] + [f"pub{i}" for i in range(1, count)]
    for stream_id in streams[1:]:
        await server.store.create_stream(stream_id)
    targets = [f"{s}:{await origin.key(s)}" for s in streams]
    seconds = WARM_UP + WINDOW + 2
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.harness.whip_client",
        origin.http,
        str(seconds),
        "180x320",
        *targets,
        cwd=str(Path(__file__).parents[1]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 60)
        await asyncio.sleep(WARM_UP)

        def counts() -> dict[str, tuple[int, int, set[str]]]:
            out = {}
            for s in streams:
                live = server.streams.sessions.get(s)
                package = server.pipelines.package(s)
                parts: set[str] = set()
                if package is not None:
                    for rendition in package.renditions.values():
                        parts |= {
                            f"{rendition.info.name}/{uri}"
                            for _, _, uri in parse_media_playlist(rendition.playlist()).parts
                        }
                out[s] = (
                    live.stats.video_frames if live else 0,
                    live.stats.audio_frames if live else 0,
                    parts,
                )
            return out

        before, cpu0, t0 = counts(), os.times(), time.monotonic()
        await asyncio.sleep(WINDOW)
        after, cpu1, t1 = counts(), os.times(), time.monotonic()
        span = t1 - t0
        video = [(after[s][0] - before[s][0]) / (span * VIDEO_FPS) for s in streams]
        audio = [(after[s][1] - before[s][1]) / (span * OPUS_FPS) for s in streams]
        part_target = float(server.pipelines.packager.part_target)
        new_parts = [len(after[s][2] - before[s][2]) * part_target / span for s in streams]
        server_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / span
        return {
            "publishers": count,
            "min_video_ratio": round(min(video), 3),
            "min_audio_ratio": round(min(audio), 3),
            "min_parts_ratio": round(min(new_parts), 3),
            "server_cpu_cores": round(server_cpu, 2),
            "healthy": min(video) >= 0.9 and min(audio) >= 0.9 and min(new_parts) >= 0.8,
        }
    finally:
        await proc.wait()
        await server.close()


def test_bench_whip_concurrent_publishers(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    """How many WHIP publishers the machine holds with a passthrough-only ladder."""

    def run() -> list[dict[str, Any]]:
        results = []
        for count in STEPS:
            result = asyncio.run(measure_step(tmp_path, count))
            results.append(result)
            if not result["healthy"]:
                break
        return results

    results = benchmark.pedantic(run, rounds=1, iterations=1)
    held = max((r["publishers"] for r in results if r["healthy"]), default=0)
    benchmark.extra_info.update({"steps": results, "held": held, "cpus": os.cpu_count()})
    lines = [
        f"\nconcurrent WHIP publishers (180x320 H.264 30 fps + Opus; passthrough-only ladder; "
        f"{os.cpu_count()} CPUs; publishers in a separate process)",
        f"{'pubs':>5}{'video':>8}{'audio':>8}{'parts':>8}{'server CPU':>12}  verdict",
    ]
    for r in results:
        lines.append(
            f"{r['publishers']:>5}{r['min_video_ratio']:>8.2f}{r['min_audio_ratio']:>8.2f}"
            f"{r['min_parts_ratio']:>8.2f}{r['server_cpu_cores']:>12.2f}  "
            f"{'holds' if r['healthy'] else 'FAILS'}"
        )
    lines.append(f"held: {held} publishers (steps {', '.join(map(str, STEPS))}, stop at a failure)")
    with capsys.disabled():
        print("\n".join(lines))
