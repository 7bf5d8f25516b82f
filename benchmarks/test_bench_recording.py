"""CPU cost of recording per passthrough stream, on the whole origin: ``shopcast serve`` with
``SHOPCAST_RECORD_ENABLED=true`` over the same origin with it ``false`` (goal ≤ 1.05×).

Each round starts ``shopcast serve`` (passthrough only: ``SHOPCAST_TRANSCODE_RUNGS=""``), creates
N streams through the API and publishes to each with a Debian ffmpeg replaying one pre-encoded
FLV (9:16 H.264 + AAC, 2 s GOP) with ``-re -stream_loop -1 -c copy``: the publishers cost next to
nothing and are identical between rounds. After a warm-up, the origin's CPU (user + sys of every
thread, from ``/proc/<pid>/stat``) is read over a fixed window; the publishers' CPU is read the
same way but not counted. A round's figure is origin CPU per second of media taken in (video
frames ingested / fps): publishers sharing a busy core send in bursts, so windows of equal wall
time hold slightly different amounts of media. Rounds alternate off, on, off, on …; each on/off
pair gives a ratio and the headline is the median pair ratio with its min–max. The origin is
pinned to one core and the publishers (and this driver) to the other when there are two, so
neither steals the other's core. The publishers are shown not to be the limit: their own CPU, and
the parts the origin published over what real time allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, ServeEnv, serve_env
from benchmarks.loadtest.prometheus import MetricsSnapshot, metrics_delta

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
FFMPEG = shutil.which("ffmpeg")
CONFIG = Path(__file__).parents[1] / "shopcast.toml"
TOKEN = "bench-recording-token"
SIZE, FPS = ("180x320", 30) if SMOKE else ("720x1280", 30)
VIDEO_BITRATE = "300k" if SMOKE else "2500k"
STREAMS = int(os.environ.get("SHOPCAST_BENCH_RECORD_STREAMS", 1 if SMOKE else 4))
#: On/off pairs; rounds = 2 × PAIRS, interleaved.
PAIRS = int(os.environ.get("SHOPCAST_BENCH_RECORD_PAIRS", 1 if SMOKE else 7))
WINDOW = float(os.environ.get("SHOPCAST_BENCH_RECORD_WINDOW", 4 if SMOKE else 20))
WARM_UP = 2.0 if SMOKE else 6.0
SOURCE_SECONDS = 4 if SMOKE else 10
PART_TARGET = 1 / 3  # shopcast.toml's part_target
TICK = os.sysconf("SC_CLK_TCK")
#: (origin core, publisher core) on a machine with two or more; ``SHOPCAST_BENCH_PIN=0`` unpins.
PIN = (0, 1) if (os.cpu_count() or 1) >= 2 and os.environ.get("SHOPCAST_BENCH_PIN") != "0" else None
RECORDING_SEGMENTS = "shopcast_recording_segments_total"
INGEST_VIDEO_FRAMES = 'shopcast_ingest_frames_total{kind="video"'


def counter_sum(text: str, prefix: str) -> float:
    """The sum of a Prometheus counter's samples whose line starts with ``prefix``."""
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(prefix)
    )


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 (state) of proc(5)
    return (int(fields[11]) + int(fields[12])) / TICK


def core_busy(core: int | None) -> tuple[float, float]:
    """(busy, total) jiffies of one CPU (None: all of them) from /proc/stat: everything on it,
    other users' too."""
    name = "cpu " if core is None else f"cpu{core} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(name):
            values = [float(v) for v in line.split()[1:]]
            return sum(values) - values[3] - values[4], sum(values)
    return 0.0, 1.0


def pinned(core: int | None) -> Callable[[], None] | None:
    return None if core is None else (lambda: os.sched_setaffinity(0, {core}))


@pytest.fixture(scope="module")
def source_flv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The publish, encoded once: 9:16 H.264 (2 s GOP, no B-frames) + AAC; its bit rate."""
    assert FFMPEG is not None
    path = tmp_path_factory.mktemp("recording") / "source.flv"
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={FPS}"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SOURCE_SECONDS)]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-b:v", VIDEO_BITRATE]
    cmd += ["-maxrate", VIDEO_BITRATE, "-bufsize", VIDEO_BITRATE, "-threads", "2"]
    cmd += ["-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0", "-bf", "0"]
    subprocess.run([*cmd, "-c:a", "aac", "-b:a", "128k", str(path)], check=True)
    return path, path.stat().st_size * 8 / SOURCE_SECONDS


class Round:
    """One ``shopcast serve`` with N publishers, recording on or off."""

    def __init__(self, folder: Path, source: Path, record: bool) -> None:
        self.folder, self.source, self.record = folder, source, record
        self.srv: ServeEnv = serve_env(
            folder,
            SHOPCAST_API_TOKENS=TOKEN,
            SHOPCAST_TRANSCODE_RUNGS="",  # passthrough only
            SHOPCAST_TRANSCODE_PASSTHROUGH="true",
            SHOPCAST_RECORD_ENABLED="true" if record else "false",
            SHOPCAST_LOG_LEVEL="WARNING",
        )
        self.publishers: list[asyncio.subprocess.Process] = []

    async def run(self) -> dict[str, Any]:
        log = (self.folder / "serve.log").open("wb")
        server = await asyncio.create_subprocess_exec(
            SHOPCAST,
            "serve",
            "--config",
            str(CONFIG),
            env=self.srv.env,
            stdout=log,
            stderr=log,
            preexec_fn=pinned(PIN[0] if PIN else None),
        )
        try:
            async with aiohttp.ClientSession() as http:
                return await self._measure(http, server.pid)
        finally:
            for proc in self.publishers:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            server.terminate()  # a clean stop: recordings close
            try:
                await asyncio.wait_for(server.wait(), 20)
            except TimeoutError:
                server.kill()
                await server.wait()
            log.close()

    async def _measure(self, http: aiohttp.ClientSession, pid: int) -> dict[str, Any]:
        base = self.srv.http
        auth = {"Authorization": f"Bearer {TOKEN}"}
        await self._until(http, f"{base}/metrics", 30)
        streams = []
        for i in range(STREAMS):
            async with http.post(
                f"{base}/api/v1/streams", json={"id": f"rec{i}"}, headers=auth
            ) as r:
                assert r.status == 201, await r.text()
                streams.append((f"rec{i}", (await r.json())["stream_key"]))
        assert FFMPEG is not None
        for _, key in streams:
            cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
            cmd += ["-stream_loop", "-1", "-i", str(self.source), "-c", "copy"]
            self.publishers.append(
                await asyncio.create_subprocess_exec(
                    *cmd,
                    "-f",
                    "flv",
                    self.srv.rtmp_url(key),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    preexec_fn=pinned(PIN[1] if PIN else None),
                )
            )
        for stream, _ in streams:
            await self._until(http, f"{base}/hls/{stream}/master.m3u8", 30)
        await asyncio.sleep(WARM_UP)

        before = await self._snapshot(http, pid)
        await asyncio.sleep(WINDOW)
        after = await self._snapshot(http, pid)

        wall = after["at"] - before["at"]
        delta = metrics_delta(before["metrics"], after["metrics"])
        running = sum(p.returncode is None for p in self.publishers)
        expected_parts = STREAMS * wall / PART_TARGET
        busy = (after["core"][0] - before["core"][0]) / (after["core"][1] - before["core"][1])
        cpu = after["origin"] - before["origin"]
        media_s = (after["frames"] - before["frames"]) / FPS
        return {
            "record": self.record,
            "origin_cpu_s": round(cpu, 3),
            "media_s": round(media_s, 2),
            # Publishers on a busy core send in bursts: the cost per second of media ingested
            # compares rounds that took in slightly different amounts.
            "origin_cpu_ms_per_media_s": round(cpu / media_s * 1000, 3) if media_s else None,
            "origin_cores": round((after["origin"] - before["origin"]) / wall, 4),
            "publishers_cpu_cores": round((after["pub"] - before["pub"]) / wall, 4),
            # The publishers' core (the whole machine when unpinned), every user's load.
            "publisher_core_busy": round(busy, 3),
            "wall_s": round(wall, 2),
            "parts_published": delta["parts_published"],
            "real_time_share": round(delta["parts_published"] / expected_parts, 3),
            "hub_dropped_frames": delta["hub_dropped_frames"],
            "segments_recorded": int(after["recorded"] - before["recorded"]),
            "publishers_running": running,
        }

    async def _snapshot(self, http: aiohttp.ClientSession, pid: int) -> dict[str, Any]:
        async with http.get(f"{self.srv.http}/metrics") as r:
            text = await r.text()
        at = time.monotonic()
        return {
            "at": at,
            "origin": process_cpu(pid),
            "pub": sum(process_cpu(p.pid) for p in self.publishers),
            "core": core_busy(PIN[1] if PIN else None),
            "metrics": MetricsSnapshot.parse(text, at),
            "recorded": counter_sum(text, RECORDING_SEGMENTS),
            "frames": counter_sum(text, INGEST_VIDEO_FRAMES),
        }

    @staticmethod
    async def _until(http: aiohttp.ClientSession, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout:.0f} s"
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def driver_on_publisher_core() -> Iterator[None]:
    """This process (polls, the event loop reaping ffmpeg) stays off the origin's core."""
    before = os.sched_getaffinity(0)
    if PIN:
        os.sched_setaffinity(0, {PIN[1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")
def test_bench_recording_cpu_whole_origin(
    benchmark: Any, source_flv: tuple[Path, float], tmp_path: Path, capsys: Any
) -> None:
    source, bitrate = source_flv
    rounds: list[dict[str, Any]] = []

    def run() -> None:
        with driver_on_publisher_core():
            for n in range(2 * PAIRS):
                folder = tmp_path / f"round{n}"
                folder.mkdir()
                result = asyncio.run(Round(folder, source, record=n % 2 == 1).run())
                rounds.append(result)
                with capsys.disabled():
                    print(f"\nround {n + 1}: {result}")

    benchmark.pedantic(run, rounds=1, iterations=1)
    off = [r for r in rounds if not r["record"]]
    on = [r for r in rounds if r["record"]]
    for r in rounds:
        assert r["publishers_running"] == STREAMS, r
        assert r["parts_published"] > 0, r
    assert all(r["segments_recorded"] == 0 for r in off), off
    assert all(r["segments_recorded"] > 0 for r in on), on
    for r in rounds:
        assert r["media_s"] > 0.5 * STREAMS * WINDOW, r  # every stream kept coming in
    unit = "origin_cpu_ms_per_media_s"
    pair_ratios = [b[unit] / a[unit] for a, b in zip(off, on, strict=True)]
    raw_ratios = [b["origin_cpu_s"] / a["origin_cpu_s"] for a, b in zip(off, on, strict=True)]
    ratio = statistics.median(pair_ratios)
    cores_off = statistics.median(r["origin_cores"] for r in off)
    cores_on = statistics.median(r["origin_cores"] for r in on)
    real_time = min(r["real_time_share"] for r in rounds)
    ms_off = statistics.median(r[unit] for r in off)
    ms_on = statistics.median(r[unit] for r in on)
    per_stream_hour = (ms_on - ms_off) * 3.6  # ms per media second → s per stream-hour
    generator = max(r["publishers_cpu_cores"] for r in rounds)
    conditions = (
        f"{STREAMS} passthrough stream(s) {SIZE} {FPS} fps H.264 {bitrate / 1e6:.2f} Mb/s + AAC, "
        f"{WINDOW:.0f} s window after {WARM_UP:.0f} s warm-up, {2 * PAIRS} rounds off/on "
        f"interleaved, origin pinned to core {PIN[0] if PIN else '-'}, publishers to core "
        f"{PIN[1] if PIN else '-'}"
    )
    benchmark.extra_info.update(
        conditions=conditions,
        streams=STREAMS,
        source_bitrate_bps=round(bitrate),
        pair_ratios=[round(r, 4) for r in pair_ratios],
        raw_pair_ratios_per_wall_second=[round(r, 4) for r in raw_ratios],
        origin_cpu_ms_per_media_s_off=statistics.median(r[unit] for r in off),
        origin_cpu_ms_per_media_s_on=statistics.median(r[unit] for r in on),
        ratio_min=round(min(pair_ratios), 4),
        ratio_max=round(max(pair_ratios), 4),
        origin_cores_off_median=cores_off,
        origin_cores_on_median=cores_on,
        recording_cpu_s_per_stream_hour=round(per_stream_hour, 1),
        publishers_cpu_cores_max=generator,
        real_time_share_min=real_time,
        rounds=rounds,
        summary={
            "ratio": ratio,
            "goal": 1.05,
            "reference": "the same origin and publishers with recording off, interleaved rounds",
            "value": f"origin CPU per stream-second with recording {ratio:.3f}× (pairs "
            f"{min(pair_ratios):.3f}–{max(pair_ratios):.3f}); {ms_off:.1f} → {ms_on:.1f} ms per "
            f"stream-second ({cores_off:.3f} → {cores_on:.3f} cores for {STREAMS} stream(s)); "
            f"publishers {generator:.3f} cores; parts ≥ {real_time:.0%} of real time",
        },
    )
    with capsys.disabled():
        print(
            f"\nrecording, whole origin: median {ratio:.3f}× (min {min(pair_ratios):.3f}, max "
            f"{max(pair_ratios):.3f}); per wall second {statistics.median(raw_ratios):.3f}×; "
            f"{ms_off:.2f} → {ms_on:.2f} ms CPU per stream-second; {conditions}; "
            f"+{per_stream_hour:.1f} CPU-s per "
            f"stream-hour; publishers ≤ {generator:.3f} cores; parts ≥ {real_time:.0%} of real time"
        )
