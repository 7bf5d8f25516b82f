"""Transcoder benchmarks (``make bench``): shopcast's ladder vs the ffmpeg CLI, and real-time
capacity. Speeds are reported, never asserted; only the outputs' correctness is.

1. The same 5 s 1080×1920 H.264 source through the same 3-rung ladder (720p/540p/360p,
   libx264 veryfast + zerolatency, same bitrates, maxrate, bufsize, GOP and scaler), with
   shopcast's production setting (decode thread + one scale+encode thread per rung, lower rungs
   scaled from the top rung's picture, x264 threads = auto) and with Debian's ffmpeg CLI
   (``split`` + three libx264 outputs to ``-f null``) at each of its settings (x264 threads
   auto or 1; each rung scaled from the source or, like shopcast, from the top rung), 5
   interleaved rounds; the ratio is against the CLI's fastest setting, median with min–max.
   Both as fast as they can; CPU per frame of each side is reported too.
2. How many real-time 1080p30 sources the machine transcodes at once with encoder lag
   (ingest arrival → packet delivered on the loop) p99 < 100 ms, searching 1, 2, …
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import pytest
from av.video.codeccontext import VideoCodecContext

from benchmarks.harness.mediakit import units_from_file
from benchmarks.loadtest.stats import percentile
from ingest.hub import StreamHub
from ingest.media import MediaKind, MediaUnit
from transcode.ladder import LadderTranscoder
from transcode.output import EncodedPacket, QueueSink
from transcode.policy import LadderConfig, Rung

FFMPEG = shutil.which("ffmpeg")
SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"  # tests/benchmarks: tiny sizes
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")

#: Source length and rounds; SHOPCAST_BENCH_TRANSCODE_SECONDS / _ROUNDS shrink them for iterating.
SECONDS = int(os.environ.get("SHOPCAST_BENCH_TRANSCODE_SECONDS", 3 if SMOKE else 5))
FPS = 30
LADDER = (Rung.named("720p", "3000k"), Rung.named("540p", "2000k"), Rung.named("360p", "730k"))
#: shopcast's production setting; SHOPCAST_BENCH_X264_THREADS (e.g. 1: one x264 thread per rung
#: instead of sliced threads) and SHOPCAST_BENCH_CASCADE=0 (every rung scaled from the source)
#: measure another one as a lever.
CONFIG = LadderConfig(
    rungs=LADDER,
    preset="veryfast",
    passthrough=False,
    encoder_threads=int(os.environ.get("SHOPCAST_BENCH_X264_THREADS", "0")),
    cascade_scaling=os.environ.get("SHOPCAST_BENCH_CASCADE", "1") != "0",
)
LAG_BUDGET = 0.100


class Sources:
    """The 1080×1920 test sources, made once per module: OBS-like (2 B-frames) or not."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, bframes: int) -> Path:
        assert FFMPEG is not None
        path = self.directory / f"src1080x1920_bf{bframes}.mp4"
        if not path.exists():
            cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
            cmd += ["-f", "lavfi", "-i", f"testsrc2=size=1080x1920:rate={FPS}"]
            cmd += ["-t", str(SECONDS), "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M"]
            cmd += ["-bf", str(bframes), "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"]
            subprocess.run([*cmd, "-pix_fmt", "yuv420p", str(path)], check=True)
        return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return Sources(tmp_path_factory.mktemp("bench"))


def ffmpeg_ladder_command(source: Path, config: LadderConfig) -> list[str]:
    """The ffmpeg CLI doing what LadderTranscoder does, with identical encoder options."""
    assert FFMPEG is not None
    labels = [f"o{i}" for i in range(len(config.rungs))]
    scale = [
        f"scale={rung.width}:{rung.height}:flags={config.scale_flags},format=yuv420p,setsar=1"
        for rung in config.rungs
    ]
    if config.cascade_scaling:
        # As shopcast does then: the top rung from the source, the others from its picture.
        graph = f"[0:v]{scale[0]},split={len(labels)}[{labels[0]}]"
        graph += "".join(f"[s{i}]" for i in range(1, len(labels)))
        graph += "".join(f";[s{i}]{scale[i]}[{labels[i]}]" for i in range(1, len(labels)))
    else:
        graph = f"[0:v]split={len(labels)}" + "".join(f"[s{i}]" for i in range(len(labels)))
        graph += "".join(f";[s{i}]{scale[i]}[{labels[i]}]" for i in range(len(labels)))
    gop = round(config.segment_duration * FPS)
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostats", "-y", "-i", str(source)]
    cmd += ["-filter_complex", graph]
    for label, rung in zip(labels, config.rungs, strict=True):
        maxrate = int(rung.bitrate * config.maxrate_factor)
        cmd += ["-map", f"[{label}]", "-an", "-c:v", "libx264", "-preset", config.preset]
        cmd += ["-tune", "zerolatency", "-profile:v", rung.profile, "-b:v", str(rung.bitrate)]
        cmd += ["-maxrate", str(maxrate), "-bufsize", str(int(maxrate * config.bufsize_seconds))]
        cmd += ["-g", str(gop), "-forced-idr", "1", "-threads", str(config.encoder_threads)]
        cmd += ["-force_key_frames", f"expr:gte(t,n_forced*{config.segment_duration})"]
        cmd += ["-x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"]
        cmd += ["-f", "null", "-"]
    return cmd


async def shopcast_ladder(units: Sequence[MediaUnit], config: LadderConfig) -> QueueSink:
    hub = StreamHub("bench", default_queue_size=1_000_000)
    sink = QueueSink()
    transcoder = LadderTranscoder(hub.add_reader("transcode"), config, sink)
    await transcoder.start()
    for unit in units:
        hub.publish(unit)
    hub.end()
    await transcoder.wait()
    await transcoder.close()
    return sink


def video_only(units: Sequence[MediaUnit]) -> list[MediaUnit]:
    return [u for u in units if u.kind is MediaKind.VIDEO]


#: The ffmpeg CLI's settings tried each round, judged at its fastest: x264 threads (auto, 1) ×
#: scale graph (each rung from the source; the lower rungs from the top rung's picture).
CLI_SETTINGS = tuple((threads, cascade) for threads in (0, 1) for cascade in (False, True))
ROUNDS = int(os.environ.get("SHOPCAST_BENCH_TRANSCODE_ROUNDS", 1 if SMOKE else 5))


def cli_label(setting: tuple[int, bool]) -> str:
    threads, cascade = setting
    return f"threads={threads} {'cascade' if cascade else 'direct'}"


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(function: Callable[[], object], cpu: list[float], who: int) -> float:
    """Wall seconds of ``function``; its CPU seconds (``who``: this process or its children)
    are appended to ``cpu``: on a shared machine CPU per frame is the figure load does not skew."""
    cpu_before = cpu_seconds(who)
    started = time.perf_counter()
    function()
    elapsed = time.perf_counter() - started
    cpu.append(cpu_seconds(who) - cpu_before)
    return elapsed


def test_bench_ladder_vs_ffmpeg_cli(benchmark: Any, sources: Sources) -> None:
    """shopcast's production setting (``CONFIG``) against the ffmpeg CLI at whichever of its
    settings is fastest here, in interleaved rounds (shopcast, each CLI setting, then the reverse
    order, …) so a load spike from the shared machine lands on both sides."""
    source = sources.get(bframes=2)
    units = video_only(units_from_file(source))
    frames = SECONDS * FPS
    commands = {
        setting: ffmpeg_ladder_command(
            source,
            dataclasses.replace(CONFIG, encoder_threads=setting[0], cascade_scaling=setting[1]),
        )
        for setting in CLI_SETTINGS
    }
    shopcast_times: list[float] = []
    cli_times: dict[tuple[int, bool], list[float]] = {s: [] for s in CLI_SETTINGS}
    shopcast_cpu: list[float] = []
    cli_cpu: dict[tuple[int, bool], list[float]] = {s: [] for s in CLI_SETTINGS}
    sinks: list[QueueSink] = []

    def shopcast_run() -> None:
        sinks.append(asyncio.run(shopcast_ladder(units, CONFIG)))

    def rounds() -> None:
        for index in range(ROUNDS):
            # Alternate who goes first so neither side always gets the cooler CPU.
            order: list[tuple[int, bool] | None] = [None, *CLI_SETTINGS]
            for side in order if index % 2 == 0 else order[::-1]:
                if side is None:
                    shopcast_times.append(timed(shopcast_run, shopcast_cpu, resource.RUSAGE_SELF))
                else:
                    cli_run = functools.partial(subprocess.run, commands[side], check=True)
                    cli_times[side].append(timed(cli_run, cli_cpu[side], resource.RUSAGE_CHILDREN))

    benchmark.pedantic(rounds, rounds=1, iterations=1)

    for sink in sinks:
        idrs = set()
        last = 0
        for rung in LADDER:
            packets = sink.drain(rung.name)
            assert abs(len(packets) - frames) <= 2
            idrs.add(tuple(p.pts for p in packets if p.keyframe))
            last = packets[-1].pts
        # B-frame source: the first picture lands a reorder delay after the origin (first DTS).
        every = round(CONFIG.segment_duration * 90_000)
        assert len(idrs) == 1 and next(iter(idrs))[1:] == tuple(range(every, last + 1, every))
    best = min(CLI_SETTINGS, key=lambda s: statistics.median(cli_times[s]))
    ratios = sorted(c / s for c, s in zip(cli_times[best], shopcast_times, strict=True))
    median = statistics.median(ratios)
    cpu_ms = {
        "shopcast": statistics.median(shopcast_cpu) / frames * 1000,
        **{f"CLI {cli_label(s)}": statistics.median(v) / frames * 1000 for s, v in cli_cpu.items()},
    }
    # Load-robust efficiency: the CLI setting using the least CPU per frame against ours (a
    # starved process does not accrue CPU time, so this ratio holds on a shared machine).
    cpu_ratio = min(statistics.median(v) for v in cli_cpu.values()) / statistics.median(
        shopcast_cpu
    )
    setting = (
        f"threads={CONFIG.encoder_threads} "
        f"{'cascade' if CONFIG.cascade_scaling else 'direct'} {CONFIG.scale_flags}"
    )
    benchmark.extra_info.update(
        rounds=ROUNDS,
        shopcast_setting=setting,
        ffmpeg_best=cli_label(best),
        shopcast_fps=frames / statistics.median(shopcast_times),
        ffmpeg_fps={cli_label(s): frames / statistics.median(v) for s, v in cli_times.items()},
        speedup=median,
        speedup_min=ratios[0],
        speedup_max=ratios[-1],
        cpu_ms_per_frame=cpu_ms,
        cpu_ratio=cpu_ratio,
        load_average=os.getloadavg()[0],
    )
    cli = ", ".join(
        f"{cli_label(s)} {frames / statistics.median(v):.1f} fps" for s, v in cli_times.items()
    )
    print(
        f"\n{ROUNDS} interleaved rounds: shopcast ({setting}) "
        f"{frames / statistics.median(shopcast_times):.1f} fps; ffmpeg CLI {cli}; "
        f"ratio vs the CLI's best ({cli_label(best)}) median {median:.2f}x "
        f"({ratios[0]:.2f}-{ratios[-1]:.2f}x); load average {os.getloadavg()[0]:.2f}\n"
        "CPU ms per source frame (median): "
        + ", ".join(f"{side} {ms:.2f}" for side, ms in cpu_ms.items())
        + f"; the CLI's least / shopcast's {cpu_ratio:.3f}x"
    )


class LagSink(QueueSink):
    """Records arrival → delivered-on-the-loop for every video packet after the warm-up."""

    def __init__(self, after: float) -> None:
        super().__init__()
        self.after = after
        self.lags: list[float] = []

    def on_packet(self, packet: EncodedPacket) -> None:
        if packet.rendition != "audio" and packet.arrival >= self.after:
            self.lags.append(time.time() - packet.arrival)


async def publish_in_real_time(hub: StreamHub, units: Sequence[MediaUnit]) -> None:
    """Publish at the pace of the units' timestamps, stamping each with its real arrival."""
    start = time.monotonic()
    for unit in units:
        due = start + unit.dts / 1000 if not unit.is_config else start
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        hub.publish(dataclasses.replace(unit, arrival=time.time()))
    hub.end()


async def realtime_sources(units: Sequence[MediaUnit], count: int) -> list[float]:
    sinks: list[LagSink] = []
    tasks = []
    transcoders = []
    warm_up = time.time() + 1.5  # planning waits for 10 frames; judge the steady state
    for index in range(count):
        hub = StreamHub(f"rt{index}", default_queue_size=512)
        sink = LagSink(warm_up)
        transcoder = LadderTranscoder(hub.add_reader("transcode"), CONFIG, sink)
        await transcoder.start()
        sinks.append(sink)
        transcoders.append(transcoder)
        tasks.append(asyncio.create_task(publish_in_real_time(hub, units)))
    await asyncio.gather(*tasks)
    for transcoder in transcoders:
        await transcoder.wait()
        await transcoder.close()
    return sorted(lag for sink in sinks for lag in sink.lags)


def reorder_holds(units: Sequence[MediaUnit]) -> tuple[list[int], list[int]]:
    """Per picture, how many later units arrive before it can leave the decoder: libavcodec's
    (its DPB waits until ``has_b_frames`` + 1 pictures are queued) and the least any decoder
    emitting in display order could do (as soon as every earlier picture has arrived)."""
    config = next(u for u in units if u.is_config)
    media = [u for u in units if not u.is_config]
    decoder = av.CodecContext.create("h264", "r")
    assert isinstance(decoder, VideoCodecContext)
    decoder.extradata = config.payload
    fed: dict[int, int] = {}
    libavcodec: list[int] = []
    for index, unit in enumerate(media):
        packet = av.Packet(unit.payload)
        packet.pts, packet.dts = unit.pts, unit.dts
        fed[unit.pts] = index
        libavcodec += [index - fed[f.pts] for f in decoder.decode(packet) if f.pts is not None]
    latest = -1
    least: list[int] = []
    for index in sorted(range(len(media)), key=lambda i: media[i].pts):
        latest = max(latest, index)
        least.append(latest - index)
    return sorted(libavcodec), sorted(least)


@pytest.mark.parametrize("bframes", [0, 2], ids=["source-no-bframes", "source-2-bframes"])
def test_bench_realtime_1080p30_capacity(benchmark: Any, sources: Sources, bframes: int) -> None:
    """Lag counts from the arrival of the frame's own unit, so a B-frame source adds the
    decoder's reorder hold (printed first: up to 4 frames = 133 ms with 2 B-frames and
    B-pyramid) before the ladder even sees the frame."""
    base = video_only(units_from_file(sources.get(bframes)))
    first_dts = min(u.dts for u in base if not u.is_config)
    units = [
        u if u.is_config else dataclasses.replace(u, pts=u.pts - first_dts, dts=u.dts - first_dts)
        for u in base
    ]
    results: dict[int, tuple[float, float]] = {}
    # The decoder's share of the lag, load-free: units held x frame intervals, p99.
    held, least = reorder_holds(units)
    hold_ms = {
        "libavcodec": percentile(held, 0.99) * 1000 / FPS,
        "display_order_least": percentile(least, 0.99) * 1000 / FPS,
    }
    print(
        f"\n[bframes={bframes}] decoder hold p99 {hold_ms['libavcodec']:.0f} ms (libavcodec), "
        f"{hold_ms['display_order_least']:.0f} ms (least possible in display order)"
    )

    def search() -> int:
        capacity = 0
        for count in range(1, 2 if SMOKE else 5):
            lags = asyncio.run(realtime_sources(units, count))
            assert lags, "no packets measured"
            p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
            results[count] = (p50, p99)
            print(
                f"\n[bframes={bframes}] {count} real-time 1080p30 source(s): "
                f"lag p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
            )
            if p99 >= LAG_BUDGET:
                break
            capacity = count
        return capacity

    capacity = benchmark.pedantic(search, rounds=1, iterations=1)
    benchmark.extra_info.update(
        capacity=capacity,
        decoder_hold_p99_ms=hold_ms,
        lag_ms={n: (round(p50 * 1000), round(p99 * 1000)) for n, (p50, p99) in results.items()},
    )
    print(f"capacity with lag p99 < {LAG_BUDGET * 1000:.0f} ms: {capacity} source(s)")
