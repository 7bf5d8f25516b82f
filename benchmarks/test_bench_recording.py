"""CPU cost of recording per passthrough stream, on the whole origin: ``shopcast serve`` with
``SHOPCAST_RECORD_ENABLED=true`` over the same origin with it ``false`` (goal ≤ 1.05×).

Each round starts ``shopcast serve`` (passthrough only: ``SHOPCAST_TRANSCODE_RUNGS=""``), creates
N streams through the API and publishes to each a fixed amount of media: a Debian ffmpeg replays
one pre-encoded FLV (9:16 H.264 + AAC, 2 s GOP) a fixed number of times with ``-re -stream_loop
… -c copy``, so the publishers cost next to nothing and send the same bytes every round. The
origin's CPU (user + sys of every thread, ``/proc/<pid>/stat``) is taken from just before the
first publish until every show has ended and its recording closed, less the idle origin's own
rate measured just before: CPU per second of media packaged (parts published × part target),
whatever the machine's load did to the pace.
(A fixed window of wall time would not do: on a loaded machine the origin runs behind, and a
window's CPU is not the window's media.) Rounds alternate off, on, off, on …; each on/off pair
gives a ratio, the headline is the median pair ratio with its min–max. The origin is pinned to one
core and the publishers (and this driver) to the other when there are two. The publishers are
shown not to be the limit: their CPU (``RUSAGE_CHILDREN``) and how long they took over the media's
length (``-re``: 1.0 when they kept real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, ServeEnv, serve_env

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
FFMPEG = shutil.which("ffmpeg")
CONFIG = Path(__file__).parents[1] / "shopcast.toml"
TOKEN = "bench-recording-token"
SIZE, FPS = ("180x320", 30) if SMOKE else ("720x1280", 30)
VIDEO_BITRATE = "300k" if SMOKE else "2500k"
STREAMS = int(os.environ.get("SHOPCAST_BENCH_RECORD_STREAMS", 1 if SMOKE else 4))
#: On/off pairs; rounds = 2 × PAIRS, interleaved.
PAIRS = int(os.environ.get("SHOPCAST_BENCH_RECORD_PAIRS", 1 if SMOKE else 7))
SOURCE_SECONDS = 4 if SMOKE else 10
#: Each publisher sends the source this many times: a fixed amount of media per round.
LOOPS = int(os.environ.get("SHOPCAST_BENCH_RECORD_LOOPS", 1 if SMOKE else 3))
MEDIA_SECONDS = SOURCE_SECONDS * LOOPS
IDLE = 1.0 if SMOKE else 2.0
#: Short, so a show's recording closes soon after its publisher leaves.
RECONNECT_WINDOW = 1.0
SETTLE = 2.0
PART_TARGET = float(tomllib.loads(CONFIG.read_text())["packager"]["part_target"])
TICK = os.sysconf("SC_CLK_TCK")
#: (origin core, publisher core) on a machine with two or more; ``SHOPCAST_BENCH_PIN=0`` unpins.
PIN = (0, 1) if (os.cpu_count() or 1) >= 2 and os.environ.get("SHOPCAST_BENCH_PIN") != "0" else None
RECORDING_SEGMENTS = "shopcast_recording_segments_total"
PARTS = "shopcast_parts_total"
HUB_DROPPED = "shopcast_hub_dropped_frames_total"
CONNECTED = "shopcast_stream_publisher_connected"


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
            SHOPCAST_PACKAGER_RECONNECT_WINDOW=str(RECONNECT_WINDOW),
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
            body = {"id": f"rec{i}"}
            async with http.post(f"{base}/api/v1/streams", json=body, headers=auth) as r:
                assert r.status == 201, await r.text()
                streams.append((f"rec{i}", (await r.json())["stream_key"]))
        # The idle origin's own rate (timers, sweeps), taken off the show's CPU below.
        await asyncio.sleep(IDLE)
        idle_cpu, idle_at = process_cpu(pid), time.monotonic()
        await asyncio.sleep(IDLE)
        idle_rate = (process_cpu(pid) - idle_cpu) / (time.monotonic() - idle_at)

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        core = core_busy(PIN[1] if PIN else None)
        cpu0, t0 = process_cpu(pid), time.monotonic()
        assert FFMPEG is not None
        for _, key in streams:
            cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
            cmd += ["-stream_loop", str(LOOPS - 1), "-i", str(self.source), "-c", "copy"]
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
        exits = await asyncio.wait_for(
            asyncio.gather(*(p.wait() for p in self.publishers)), 3 * MEDIA_SECONDS + 30
        )
        sent_in = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        publishers_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        busy = core_busy(PIN[1] if PIN else None)
        # Every show over (recordings closed after the reconnect window): the work is done.
        await self._until_ended(http)
        await asyncio.sleep(RECONNECT_WINDOW + SETTLE)
        cpu1, t1 = process_cpu(pid), time.monotonic()

        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
        recordings = []
        for stream, _ in streams:
            url = f"{base}/api/v1/streams/{stream}/recordings"
            async with http.get(url, headers=auth) as r:
                recordings += (await r.json())["recordings"]
        parts = int(counter_sum(text, PARTS))
        # Media the origin took in and packaged: on a starved machine a show can lose some.
        media = parts * PART_TARGET
        cpu = cpu1 - cpu0 - idle_rate * (t1 - t0)
        return {
            "record": self.record,
            "origin_cpu_s": round(cpu, 3),
            "origin_cpu_s_raw": round(cpu1 - cpu0, 3),
            "idle_cores": round(idle_rate, 4),
            "origin_cpu_ms_per_media_s": round(cpu / media * 1000, 3) if media else None,
            "publish_wall_over_media": round(sent_in / MEDIA_SECONDS, 3),
            "publishers_cpu_cores": round(publishers_cpu / sent_in, 4),
            # The publishers' core (the whole machine when unpinned), every user's load.
            "publisher_core_busy": round((busy[0] - core[0]) / (busy[1] - core[1]), 3),
            "publisher_exits": list(exits),
            "parts_published": parts,
            "parts_expected": round(STREAMS * MEDIA_SECONDS / PART_TARGET),
            "hub_dropped_frames": int(counter_sum(text, HUB_DROPPED)),
            "segments_recorded": int(counter_sum(text, RECORDING_SEGMENTS)),
            "recordings_ready": sum(r["state"] == "ready" for r in recordings),
        }

    async def _until_ended(self, http: aiohttp.ClientSession) -> None:
        """Until no stream has a publisher (the origin has taken in and ended every show)."""
        deadline = time.monotonic() + 60
        while True:
            async with http.get(f"{self.srv.http}/metrics") as r:
                text = await r.text()
            if counter_sum(text, CONNECTED) == 0:
                return
            assert time.monotonic() < deadline, "the shows did not end"
            await asyncio.sleep(1.0)

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


@pytest.mark.timeout(1800)
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
        assert r["publisher_exits"] == [0] * STREAMS, r  # every publisher sent all of it
        assert r["parts_published"] >= 0.5 * r["parts_expected"], r
    assert all(r["segments_recorded"] == r["recordings_ready"] == 0 for r in off), off
    assert all(r["segments_recorded"] > 0 and r["recordings_ready"] == STREAMS for r in on), on
    unit = "origin_cpu_ms_per_media_s"
    pair_ratios = [b[unit] / a[unit] for a, b in zip(off, on, strict=True)]
    ratio = statistics.median(pair_ratios)
    ms_off = statistics.median(r[unit] for r in off)
    ms_on = statistics.median(r[unit] for r in on)
    per_stream_hour = (ms_on - ms_off) * 3.6  # ms per media second → s per stream-hour
    pace = max(r["publish_wall_over_media"] for r in rounds)
    short = sum(r["parts_published"] < r["parts_expected"] for r in rounds)
    generator = max(r["publishers_cpu_cores"] for r in rounds)
    conditions = (
        f"{STREAMS} passthrough stream(s) {SIZE} {FPS} fps H.264 {bitrate / 1e6:.2f} Mb/s + AAC "
        f"(2 s GOP), {MEDIA_SECONDS} s of media each per round, {2 * PAIRS} rounds off/on "
        f"interleaved, origin pinned to core {PIN[0] if PIN else '-'}, publishers to core "
        f"{PIN[1] if PIN else '-'}"
    )
    benchmark.extra_info.update(
        conditions=conditions,
        streams=STREAMS,
        media_seconds_per_stream=MEDIA_SECONDS,
        source_bitrate_bps=round(bitrate),
        pair_ratios=[round(r, 4) for r in pair_ratios],
        ratio_min=round(min(pair_ratios), 4),
        ratio_max=round(max(pair_ratios), 4),
        origin_cpu_ms_per_media_s_off=ms_off,
        origin_cpu_ms_per_media_s_on=ms_on,
        recording_cpu_s_per_stream_hour=round(per_stream_hour, 1),
        publishers_cpu_cores_max=generator,
        publish_wall_over_media_max=pace,
        rounds_short_of_media=short,
        rounds=rounds,
        summary={
            "ratio": ratio,
            "goal": 1.05,
            "reference": "the same origin and publishers with recording off, interleaved rounds",
            "value": f"origin CPU per stream-second with recording {ratio:.3f}× (pairs "
            f"{min(pair_ratios):.3f}–{max(pair_ratios):.3f}); {ms_off:.1f} → {ms_on:.1f} ms per "
            f"stream-second; publishers ≤ {generator:.3f} cores, sent in ≤ {pace:.2f}× real time",
        },
    )
    with capsys.disabled():
        print(
            f"\nrecording, whole origin: median {ratio:.3f}× (min {min(pair_ratios):.3f}, max "
            f"{max(pair_ratios):.3f}); {ms_off:.2f} → {ms_on:.2f} ms CPU per stream-second "
            f"(+{per_stream_hour:.1f} CPU-s per stream-hour); {conditions}; publishers ≤ "
            f"{generator:.3f} cores, sent in ≤ {pace:.2f}× real time"
        )
