"""Clip cut time: a 30 s clip of a 720×1280 recording, cut by ``packager.clips.cut_clip``.

The recording is what the packager writes: a real libx264 encode (720×1280, ~2.5 Mb/s, 2 s
GOPs, no B-frames) plus AAC, cut into 2 s segments of 1/3 s parts by the packager's own
``PartCutter``; one 2 s GOP is encoded and repeated, so building the input stays cheap. The
reference is the ffmpeg CLI doing the same stream copy on the same bytes
(``ffmpeg -ss <start> -i <init+segments> -t <len> -c copy -movflags +faststart``), timed in the
same run; the ratio is cut_clip's median over the CLI's (< 1: faster than the CLI).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from av.video.frame import PictureType

from ingest.codecs.h264 import AvcConfig, annexb_to_avcc
from packager.clips import ClipTag, RecordedSegment, covering, cut_clip
from packager.fmp4 import TrackInfo, init_segment
from packager.segmenter import AUDIO_TRACK_ID, VIDEO_TRACK_ID, PartCutter, TrackTiming
from packager.tags import id3_txxx
from transcode.output import EncodedPacket

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
CLIP_SECONDS = 4 if SMOKE else 30
RECORDING_SECONDS = 8 if SMOKE else 60
GOP = 2  # seconds, as the ladder's default segment
VIDEO_TS, AUDIO_RATE, FPS = 90_000, 48_000, 30
ROUNDS = 3 if SMOKE else 7
FFMPEG = shutil.which("ffmpeg")


def _encode_gop() -> tuple[bytes, list[tuple[int, bool, bytes]], bytes, list[bytes]]:
    """(avcC, [(frame index, keyframe, AVCC payload)], AudioSpecificConfig, AAC frames)."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 720, 1280, "yuv420p"
    encoder.time_base = Fraction(1, FPS)
    encoder.bit_rate = 2_500_000
    encoder.flags |= av.codec.context.Flags.global_header
    encoder.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "x264-params": f"keyint={GOP * FPS}:min-keyint={GOP * FPS}:scenecut=0",
    }
    video: list[tuple[int, bool, bytes]] = []
    with av.open(
        f"testsrc2=size=720x1280:rate={FPS}:duration={GOP},format=yuv420p", format="lavfi"
    ) as source:
        for frame in [*source.decode(video=0), None]:
            if frame is not None:  # lavfi marks every picture I, and libx264 would obey
                frame.pict_type = PictureType.NONE
            for packet in encoder.encode(frame):
                video.append(
                    (int(packet.pts or 0), packet.is_keyframe, annexb_to_avcc(bytes(packet)))
                )
    avcc = AvcConfig.from_annexb(bytes(encoder.extradata or b"")).to_bytes()
    aac = av.CodecContext.create("aac", "w")
    aac.sample_rate, aac.layout, aac.format = AUDIO_RATE, "stereo", "fltp"
    aac.bit_rate = 128_000
    aac.flags |= av.codec.context.Flags.global_header
    audio: list[bytes] = []
    with av.open(
        f"sine=frequency=440:sample_rate={AUDIO_RATE}:duration={GOP}", format="lavfi"
    ) as sine:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        frames = [r for f in sine.decode(audio=0) for r in resampler.resample(f)]
        fifo = av.AudioFifo()
        for f in frames:
            fifo.write(f)
        for f in fifo.read_many(1024):
            audio += [bytes(p) for p in aac.encode(f)]
        audio += [bytes(p) for p in aac.encode(None)]
    return avcc, video, bytes(aac.extradata or b""), audio


def make_recording(seconds: int) -> tuple[bytes, list[RecordedSegment]]:
    """The init segment and the segments of a ``seconds`` long recording of one rendition."""
    avcc, gop, asc, aac = _encode_gop()
    init = init_segment(
        [
            TrackInfo(VIDEO_TRACK_ID, "video", VIDEO_TS, avcc, width=720, height=1280),
            TrackInfo(AUDIO_TRACK_ID, "audio", AUDIO_RATE, asc, sample_rate=AUDIO_RATE, channels=2),
        ]
    )
    cutter = PartCutter(
        TrackTiming(VIDEO_TRACK_ID, VIDEO_TS),
        TrackTiming(AUDIO_TRACK_ID, AUDIO_RATE),
        Fraction(1, 3),
        Fraction(GOP),
    )
    per_frame, per_aac = VIDEO_TS // FPS, 1024
    aac_per_gop = len(aac)
    segments: list[RecordedSegment] = []
    parts: list[bytes] = []

    def take(part: Any) -> None:
        if part is None:
            return
        parts.append(part.data)
        if part.ends_segment:
            start = len(segments) * GOP
            segments.append(RecordedSegment(float(start), float(GOP), b"".join(parts)))
            parts.clear()

    for g in range(seconds // GOP):
        for i, payload in enumerate(aac):
            n = g * aac_per_gop + i
            cutter.push_audio(
                EncodedPacket("audio", n * per_aac, n * per_aac, per_aac, True, payload, 0.0)
            )
        for index, key, payload in gop:
            ticks = (g * GOP * FPS + index) * per_frame
            take(
                cutter.push_lead(EncodedPacket("video", ticks, ticks, per_frame, key, payload, 0.0))
            )
    take(cutter.flush())
    return init, segments


@pytest.fixture(scope="module")
def recording() -> tuple[bytes, list[RecordedSegment]]:
    return make_recording(RECORDING_SECONDS)


def _cli_cut(source: Path, out: Path, start: float, seconds: float) -> None:
    assert FFMPEG is not None
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-ss", str(start)]
    args += ["-i", str(source), "-t", str(seconds), "-c", "copy"]
    subprocess.run([*args, "-movflags", "+faststart", str(out)], check=True)


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg not installed")
def test_cut_30s_clip_vs_ffmpeg_cli(
    benchmark: Any, recording: tuple[bytes, list[RecordedSegment]], tmp_path: Path
) -> None:
    init, segments = recording
    start = 7.4 if not SMOKE else 1.4  # mid-GOP: the clip starts at the IDR before it
    end = start + CLIP_SECONDS
    picked = [segments[i] for i in covering([(s.start, s.duration) for s in segments], start, end)]
    tags = [ClipTag(f"t{i}", start + i * 5, id3_txxx("com.shopcast.tag", "{}")) for i in range(3)]

    clip = benchmark.pedantic(
        cut_clip, args=(init, picked, start, end, tags), rounds=ROUNDS, iterations=1
    )
    assert clip.start <= start and abs(clip.end - end) < 1 / FPS
    ours = benchmark.stats.stats.median

    # The reference: the ffmpeg CLI on the same bytes (relative start within them).
    source = tmp_path / "covering.mp4"
    source.write_bytes(init + b"".join(s.data for s in picked))
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        _cli_cut(source, tmp_path / "cli.mp4", start - picked[0].start, end - start)
        times.append(time.perf_counter() - began)
    cli = statistics.median(times)
    with av.open(str(tmp_path / "cli.mp4")) as made:
        assert made.streams.video[0].frames > 0
    benchmark.extra_info.update(
        {
            "summary": {
                "ratio": ours / cli,
                "reference": "ffmpeg CLI -ss … -c copy -movflags +faststart, same bytes, same run",
                "value": f"{CLIP_SECONDS} s clip of 720×1280 ~2.5 Mb/s + AAC: cut_clip "
                f"{ours * 1000:.0f} ms (median of {ROUNDS}), ffmpeg CLI {cli * 1000:.0f} ms, "
                f"{len(clip.data) / 1e6:.1f} MB",
            },
            "clip_seconds": CLIP_SECONDS,
            "cut_ms": round(ours * 1000, 1),
            "ffmpeg_cli_ms": round(cli * 1000, 1),
            "clip_bytes": len(clip.data),
        }
    )
    print(
        f"\n{CLIP_SECONDS} s clip: cut_clip {ours * 1000:.0f} ms, ffmpeg CLI {cli * 1000:.0f} ms "
        f"(ratio {ours / cli:.2f}), {len(clip.data) / 1e6:.1f} MB"
    )
