"""What an HEVC (or AV1) source costs the ladder, as a ratio to the same picture sent as H.264.

The same testsrc2 picture (1080×1920 30 fps, 5 s; 360×640 for 2 s in smoke mode), encoded once
per codec by Debian's ffmpeg at the same bitrate without B-frames, goes through the same
shopcast ladder (decode + scale + libx264 per rung) as fast as it can, one after the other in
this run. Figures: the process's CPU seconds (all threads) and wall seconds per source; the
ratio is CPU seconds against the H.264 source. Only the outputs' correctness is asserted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness.mediakit import units_from_file
from benchmarks.test_bench_transcode import CONFIG, shopcast_ladder, video_only
from transcode.policy import LadderConfig, Rung

FFMPEG = shutil.which("ffmpeg")
SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")

SIZE, SECONDS = ("360x640", 2) if SMOKE else ("1080x1920", 5)
FPS = 30
LADDER = (
    LadderConfig(rungs=(Rung.named("270p", "400k"), Rung.named("180p", "200k")), passthrough=False)
    if SMOKE
    else CONFIG
)
#: codec → the source encoder's own options (same bitrate, no B-frames, a 2 s GOP).
ENCODERS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-bf", "0"],
    "hevc": ["-c:v", "libx265", "-preset", "veryfast", "-x265-params", "bframes=0:log-level=error"],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "pred-struct=1"],
}


def make_source(directory: Path, codec: str) -> Path:
    assert FFMPEG is not None
    path = directory / f"src_{codec}.mp4"
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", f"testsrc2=size={SIZE}:rate={FPS}", "-t", str(SECONDS), *ENCODERS[codec]]
    cmd += ["-b:v", "1M" if SMOKE else "6M", "-g", str(2 * FPS), "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)
    return path


def test_bench_hevc_and_av1_source_vs_h264(benchmark: Any, tmp_path: Path) -> None:
    units = {codec: video_only(units_from_file(make_source(tmp_path, codec))) for codec in ENCODERS}
    frames = SECONDS * FPS
    figures: dict[str, tuple[float, float]] = {}

    def run() -> None:
        for codec, source in units.items():
            cpu, wall = time.process_time(), time.perf_counter()
            sink = asyncio.run(shopcast_ladder(source, LADDER))
            figures[codec] = (time.process_time() - cpu, time.perf_counter() - wall)
            for rung in LADDER.rungs:
                assert abs(len(sink.drain(rung.name)) - frames) <= 2, (codec, rung.name)

    benchmark.pedantic(run, rounds=1, iterations=1)
    h264_cpu = figures["h264"][0]
    hevc_ratio = figures["hevc"][0] / h264_cpu
    av1_ratio = figures["av1"][0] / h264_cpu
    benchmark.extra_info.update(
        summary={
            "ratio": round(hevc_ratio, 3),
            "reference": "CPU seconds of the same ladder from the same picture as H.264, same run",
            "value": f"{frames} frames of {SIZE}: "
            + ", ".join(
                f"{c} {cpu:.2f} s CPU / {wall:.2f} s wall" for c, (cpu, wall) in figures.items()
            ),
        },
        hevc_cpu_ratio=hevc_ratio,
        av1_cpu_ratio=av1_ratio,
        cpu_seconds={c: round(cpu, 3) for c, (cpu, _) in figures.items()},
        wall_seconds={c: round(wall, 3) for c, (_, wall) in figures.items()},
    )
    print(f"\nHEVC source {hevc_ratio:.2f}x, AV1 source {av1_ratio:.2f}x the H.264 ladder CPU")
