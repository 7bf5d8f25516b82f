"""Real encoded media for packager tests: PyAV libx264/AAC packets shaped as transcoder output."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from ingest.media import MediaKind
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, RenditionInfo

FPS = 30
FRAME_TICKS = VIDEO_TIMESCALE // FPS


def encode_video(
    name: str, seconds: float, width: int = 180, height: int = 320, bframes: int = 0, gop: int = 60
) -> tuple[RenditionInfo, list[EncodedPacket]]:
    """H.264 with IDRs every ``gop`` frames, timestamps in 90 kHz, AVCC payloads."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, VIDEO_TIMESCALE)
    enc.framerate = Fraction(FPS)
    enc.flags |= av.codec.context.Flags.global_header
    enc.options = {
        "preset": "ultrafast" if not bframes else "veryfast",
        "bf": str(bframes),
        "g": str(gop),
        "keyint_min": str(gop),
        "sc_threshold": "0",
    }
    out = []
    n = int(seconds * FPS)
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(
            np.full((height, width, 3), (i * 7) % 256, dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        frame.pts = i * FRAME_TICKS
        frame.time_base = enc.time_base
        if i % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out += enc.encode(frame)
    out += enc.encode(None)
    info = RenditionInfo(
        name=name,
        kind=MediaKind.VIDEO,
        codec="h264",
        codec_string="avc1.640015",
        timescale=VIDEO_TIMESCALE,
        extradata=bytes(enc.extradata),
        bitrate=300_000,
        width=width,
        height=height,
        fps=Fraction(FPS),
    )
    packets = [
        EncodedPacket(name, p.pts, p.dts, FRAME_TICKS, p.is_keyframe, bytes(p), 1_000_000.0)
        for p in out
    ]
    return info, packets


def encode_audio(name: str, seconds: float) -> tuple[RenditionInfo, list[EncodedPacket]]:
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "fltp"
    enc.time_base = Fraction(1, 48000)
    enc.flags |= av.codec.context.Flags.global_header
    out = []
    for i in range(int(seconds * 48000 / 1024)):
        t = (np.arange(1024) + i * 1024) / 48000
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i * 1024
        out += enc.encode(frame)
    out += enc.encode(None)
    info = RenditionInfo(
        name=name,
        kind=MediaKind.AUDIO,
        codec="aac",
        codec_string="mp4a.40.2",
        timescale=48000,
        extradata=bytes(enc.extradata),
        bitrate=128_000,
        sample_rate=48000,
        channels=2,
    )
    packets = [EncodedPacket(name, p.pts, p.dts, 1024, True, bytes(p), 1_000_000.0) for p in out]
    return info, packets
