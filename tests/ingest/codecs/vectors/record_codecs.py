"""Record codec configuration vectors with Debian ffmpeg: avcC, Annex B, AudioSpecificConfig.

Each video vector is one libx264 frame written to FLV (FFmpeg's own avcC writer) →
``avcc_<name>.bin``, and the same packets copied to a raw ``.h264`` stream (Annex B, parameter
sets first) → ``annexb_<name>.bin``. Each audio vector is the AudioSpecificConfig of FFmpeg's
AAC encoder → ``asc_<name>.bin``. ``codecs.json`` holds the commands and ffprobe's answers.

    .venv/bin/python tests/ingest/codecs/vectors/record_codecs.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import av

HERE = Path(__file__).resolve().parent
FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]

VIDEO: dict[str, list[str]] = {
    "high_420_8bit": ["-pix_fmt", "yuv420p", "-profile:v", "high"],
    "high10_420": ["-pix_fmt", "yuv420p10le", "-profile:v", "high10"],
    "high422_8bit": ["-pix_fmt", "yuv422p", "-profile:v", "high422"],
    "high422_10bit": ["-pix_fmt", "yuv422p10le", "-profile:v", "high422"],
    "main": ["-pix_fmt", "yuv420p", "-profile:v", "main"],
    "baseline": ["-pix_fmt", "yuv420p", "-profile:v", "baseline"],
}
AUDIO: dict[str, tuple[int, int]] = {
    "lc_44100_stereo": (44100, 2),
    "lc_44100_mono": (44100, 1),
    "lc_48000_stereo": (48000, 2),
    "lc_48000_mono": (48000, 1),
}


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


def record_video(name: str, options: list[str], tmp: Path) -> dict[str, Any]:
    flv = tmp / f"{name}.flv"
    source = ["-f", "lavfi", "-i", "testsrc2=size=72x40:rate=25", "-frames:v", "1"]
    encode = ["-c:v", "libx264", "-preset", "medium", *options]
    subprocess.run([*FFMPEG, *source, *encode, "-f", "flv", str(flv)], check=True)
    h264 = tmp / f"{name}.h264"
    subprocess.run([*FFMPEG, "-i", str(flv), "-c", "copy", "-f", "h264", str(h264)], check=True)
    with av.open(str(flv)) as container:
        avcc = bytes(container.streams.video[0].codec_context.extradata or b"")
    (HERE / f"avcc_{name}.bin").write_bytes(avcc)
    (HERE / f"annexb_{name}.bin").write_bytes(h264.read_bytes())
    info = probe(flv)
    return {
        "command": " ".join([*source, *encode]),
        "profile": info["profile"],
        "level": info["level"],
        "pix_fmt": info["pix_fmt"],
        "width": info["width"],
        "height": info["height"],
    }


def record_audio(name: str, rate: int, channels: int, tmp: Path) -> dict[str, Any]:
    m4a = tmp / f"{name}.m4a"
    source = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}", "-t", "0.1"]
    encode = ["-c:a", "aac", "-ac", str(channels), "-b:a", "64k"]
    subprocess.run([*FFMPEG, *source, *encode, str(m4a)], check=True)
    with av.open(str(m4a)) as container:
        asc = bytes(container.streams.audio[0].codec_context.extradata or b"")
    (HERE / f"asc_{name}.bin").write_bytes(asc)
    info = probe(m4a)
    return {
        "command": " ".join([*source, *encode]),
        "profile": info["profile"],
        "sample_rate": int(info["sample_rate"]),
        "channels": info["channels"],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        index = {
            "video": {n: record_video(n, o, tmp) for n, o in VIDEO.items()},
            "audio": {n: record_audio(n, r, c, tmp) for n, (r, c) in AUDIO.items()},
        }
    (HERE / "codecs.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
