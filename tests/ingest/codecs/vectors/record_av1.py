"""Record AV1 configuration vectors with Debian ffmpeg: one-frame encodes into MP4 (its av1C).

``av1_configs.json`` holds, per encode, the command, the av1C record FFmpeg's MP4 muxer wrote
(hex) and ffprobe's answers (size, profile, pix_fmt): the expected values.

    .venv/bin/python tests/ingest/codecs/vectors/record_av1.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
AOM = ["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"]
SVT = ["-c:v", "libsvtav1", "-preset", "12"]

ENCODES: dict[str, tuple[str, list[str]]] = {
    "svt_main_180x320": ("180x320", [*SVT, "-pix_fmt", "yuv420p"]),
    "aom_main10_360x640": ("360x640", [*AOM, "-pix_fmt", "yuv420p10le"]),
    "aom_high_444_64x64": ("64x64", [*AOM, "-pix_fmt", "yuv444p"]),
    "aom_main_1920x1080": ("1920x1080", [*AOM, "-pix_fmt", "yuv420p"]),
    "aom_mono_96x96": ("96x96", [*AOM, "-pix_fmt", "gray"]),
}


def main() -> None:
    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (size, args) in ENCODES.items():
            path = Path(tmp) / f"{name}.mp4"
            source = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-frames:v", "1"]
            cmd = [*FFMPEG, *source, *args, str(path)]
            subprocess.run(cmd, check=True, capture_output=True)
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                record = bytes(stream.codec_context.extradata or b"")
                width, height = stream.codec_context.width, stream.codec_context.height
                profile = stream.codec_context.profile
                pix_fmt = stream.codec_context.format.name if stream.codec_context.format else ""
            out[name] = {
                "command": " ".join(cmd[5:-1]),
                "av1c": record.hex(),
                "width": width,
                "height": height,
                "profile": profile,
                "pix_fmt": pix_fmt,
            }
    (HERE / "av1_configs.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
