"""Record the MPEG-TS vectors with Debian ffmpeg (see README.md); run from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = [
    "-f", "lavfi", "-i", "testsrc2=size=180x320:rate=30",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-t", "2", "-pix_fmt", "yuv420p",
]  # fmt: skip
AUDIO = ["-c:a", "aac", "-ac", "2", "-b:a", "64k"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "2"]
HEVC = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error"]
#: 95 442 s is 1.7 s before the 33-bit PTS counter wraps (2^33 / 90 kHz = 95 443.7 s).
WRAP = ["-output_ts_offset", "95442"]
VECTORS = {
    "ts_h264_aac": H264 + AUDIO,
    "ts_hevc_aac": HEVC + AUDIO,
    "ts_h264_wrap": H264 + AUDIO + WRAP,
}


def record(name: str) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *SOURCES, *VECTORS[name]]
    subprocess.run([*cmd, "-f", "mpegts", str(HERE / f"{name}.ts")], check=True)


if __name__ == "__main__":
    for name in sys.argv[1:] or VECTORS:
        record(name)
