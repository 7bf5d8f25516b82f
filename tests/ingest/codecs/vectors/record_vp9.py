"""Record VP9 configuration vectors with Debian ffmpeg: one-frame libvpx-vp9 encodes into MP4.

``vp9_configs.json`` holds, per encode, the command, the vpcC box payload FFmpeg's MP4 muxer
wrote (hex), the keyframe's first bytes (its uncompressed header) and ffprobe's answers (size,
profile, pix_fmt): the expected values.

    .venv/bin/python tests/ingest/codecs/vectors/record_vp9.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
VPX = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]

ENCODES: dict[str, tuple[str, list[str]]] = {
    "vp9_p0_180x320": ("180x320", [*VPX, "-pix_fmt", "yuv420p"]),
    "vp9_p1_444_64x64": ("64x64", [*VPX, "-pix_fmt", "yuv444p"]),
    "vp9_p2_10bit_360x640": ("360x640", [*VPX, "-pix_fmt", "yuv420p10le"]),
    "vp9_p0_1920x1080": ("1920x1080", [*VPX, "-pix_fmt", "yuv420p"]),
    "vp9_p1_422_96x96": ("96x96", [*VPX, "-pix_fmt", "yuv422p"]),
}


def vpcc_payload(mp4: bytes) -> bytes:
    """The vpcC box's payload (after size and type), as FFmpeg wrote it."""
    at = mp4.index(b"vpcC")
    size = int.from_bytes(mp4[at - 4 : at], "big")
    return mp4[at + 4 : at - 4 + size]


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
                frame = bytes(next(container.demux(stream)))
                ctx = stream.codec_context
                width, height, profile = ctx.width, ctx.height, ctx.profile
                pix_fmt = ctx.format.name if ctx.format else ""
            out[name] = {
                "command": " ".join(cmd[5:-1]),
                "vpcc": vpcc_payload(path.read_bytes()).hex(),
                "keyframe_head": frame[:16].hex(),
                "width": width,
                "height": height,
                "profile": profile,
                "pix_fmt": pix_fmt,
            }
    (HERE / "vp9_configs.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
