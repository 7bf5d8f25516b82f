"""MPEG-TS demux throughput: our sans-I/O demuxer against libavformat's (through PyAV), same run.

Input arrives as SRT delivers it, 1316-byte messages (7 TS packets); each is fed, then every
event is drained. The reference demuxes the same bytes with PyAV from memory (packets only, no
decoding, as ours). An SRT publisher at 6 Mbit/s is 0.75 MB/s: the absolute figure says how
many such publishers one core's demuxing could carry.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import av
import pytest

from ingest.mpegts import NEED_DATA, StreamEnded, TSDemuxer

from .conftest import SMOKE

VECTOR = Path(__file__).parents[1] / "tests" / "ingest" / "vectors" / "ts_h264_aac.ts"
MESSAGE = 1316
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def ts_input() -> tuple[str, bytes]:
    """720x1280 libx264 3 Mbit/s + AAC, 4 s (smoke: the 180x320 test vector)."""
    ffmpeg = shutil.which("ffmpeg")
    if SMOKE or ffmpeg is None:
        return f"recorded {VECTOR.name} (180x320, 2 s)", VECTOR.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "in.ts"
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"]
        cmd += ["testsrc2=size=720x1280:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000"]
        cmd += ["-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3000k"]
        cmd += ["-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(out)]
        subprocess.run(cmd, check=True)
        return "ffmpeg libx264 720x1280 3000k + AAC 128k, 4 s", out.read_bytes()


def demux_ours(messages: list[bytes]) -> int:
    demuxer = TSDemuxer(clock=lambda: 0.0)
    units = 0
    for message in [*messages, b""]:
        demuxer.receive_data(message)
        while (event := demuxer.next_event()) is not NEED_DATA:
            if isinstance(event, StreamEnded):
                return units
            units += 1
    return units


def demux_libavformat(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        return len([packet for packet in container.demux() if packet.size])


@pytest.mark.parametrize("demuxer", ["libavformat", "ours"])
def test_ts_demux_throughput(benchmark: Any, ts_input: tuple[str, bytes], demuxer: str) -> None:
    source, data = ts_input
    messages = [data[i : i + MESSAGE] for i in range(0, len(data), MESSAGE)]
    if demuxer == "ours":
        events = benchmark(demux_ours, messages)
        assert events > demux_libavformat(data)  # every packet, plus configs and PMT events
    else:
        assert benchmark(demux_libavformat, data) > 0
    rate = len(data) / benchmark.stats.stats.median / 1e6
    RATES[demuxer] = rate
    info: dict[str, Any] = {"input": source, "bytes": len(data), "mb_per_s": round(rate, 1)}
    if demuxer == "ours" and "libavformat" in RATES:
        ratio = rate / RATES["libavformat"]
        info["summary"] = {
            "ratio": round(ratio, 3),
            "reference": "libavformat's MPEG-TS demuxer through PyAV, same bytes, same run",
            "value": f"{rate:.1f} MB/s in 1316-byte SRT messages",
        }
    benchmark.extra_info.update(info)
