"""The encoded-frame "decoders" aiortc's receiver threads run for WHIP sessions."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from aiortc.jitterbuffer import JitterFrame

from ingest.codecs import iter_annexb, iter_avcc, parse_avcc
from ingest.media import MediaKind
from ingest.whip.codecs import (
    AUDIO_CLOCK,
    H264Passthrough,
    OpusPassthrough,
    Vp8Passthrough,
)


def _frames(n: int, width: int = 64, height: int = 112) -> list[av.VideoFrame]:
    out = []
    for i in range(n):
        img = np.full((height * 3 // 2, width), 16 + 4 * i, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts = i
        out.append(frame)
    return out


def _encode(codec: str, n: int, gop: int) -> list[bytes]:
    enc = av.CodecContext.create(codec, "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = 64, 112, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.gop_size = gop
    if codec == "libx264":
        enc.options = {"tune": "zerolatency", "x264-params": f"keyint={gop}:min-keyint={gop}"}
    packets = [bytes(p) for f in _frames(n) for p in enc.encode(f)]
    packets += [bytes(p) for p in enc.encode(None)]
    return packets


def test_h264_annexb_becomes_avcc_with_avcc_record_on_change() -> None:
    packets = _encode("libx264", 12, gop=5)
    dec = H264Passthrough(lambda: 123.0)
    out = [f for i, p in enumerate(packets) for f in dec.decode(JitterFrame(p, i * 3000))]
    assert len(out) == len(packets)
    first = out[0]
    assert first.kind is MediaKind.VIDEO and first.codec == "h264" and first.keyframe
    assert first.config is not None
    record = parse_avcc(first.config)
    assert record.sps and record.pps and record.length_size == 4
    assert [f.keyframe for f in out] == [i % 5 == 0 for i in range(12)]
    # In-band SPS/PPS repeat on every IDR, unchanged: the record is announced once.
    assert [f.config is not None for f in out] == [True] + [False] * 11
    for f in out:
        nal_types = {nal[0] & 0x1F for nal in iter_avcc(f.payload)}
        assert not nal_types & {7, 8, 9}  # parameter sets live in the avcC, AUDs go
    assert [f.timestamp for f in out] == [i * 3000 for i in range(12)]
    assert out[0].arrival == 123.0

    # The payload still decodes with the record as extradata.
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = first.config
    frames = [fr for f in out for fr in decoder.decode(av.Packet(f.payload))]
    frames += decoder.decode(None)
    assert len(frames) == 12


def test_h264_without_slices_gives_nothing() -> None:
    sps_only = b"".join(b"\x00\x00\x00\x01" + n for n in iter_annexb(_encode("libx264", 1, 1)[0]))
    dec = H264Passthrough(lambda: 0.0)
    aud = b"\x00\x00\x00\x01\x09\xf0"
    assert dec.decode(JitterFrame(aud, 0)) == []
    assert dec.decode(JitterFrame(sps_only, 0))[0].config is not None


def test_vp8_keyframes_and_size() -> None:
    packets = _encode("libvpx", 8, gop=4)
    dec = Vp8Passthrough(lambda: 1.0)
    out = [f for i, p in enumerate(packets) for f in dec.decode(JitterFrame(p, i * 3000))]
    assert out[0].keyframe and (out[0].width, out[0].height) == (64, 112)
    assert out[0].config is None and out[0].payload == packets[0]
    assert not out[1].keyframe and out[1].width is None
    assert dec.decode(JitterFrame(b"\x00", 0)) == []


def _opus_packets(seconds: float) -> list[tuple[int, bytes]]:
    enc = av.CodecContext.create("libopus", "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = AUDIO_CLOCK, "stereo", "s16"
    enc.time_base = Fraction(1, AUDIO_CLOCK)
    out = []
    n = int(seconds * AUDIO_CLOCK) // 960
    for i in range(n):
        t = np.arange(i * 960, (i + 1) * 960)
        tone = (np.sin(2 * np.pi * 440 * t / AUDIO_CLOCK) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * 960
        out += [(i * 960, bytes(p)) for p in enc.encode(frame)]
    return out


def test_opus_packets_pass_through_on_the_rtp_clock() -> None:
    packets = _opus_packets(0.2)
    dec = OpusPassthrough(lambda: 5.0)
    out = [f for ts, data in packets for f in dec.decode(JitterFrame(data, ts))]
    assert [f.payload for f in out] == [data for _, data in packets]
    assert [f.timestamp for f in out] == [ts for ts, _ in packets]
    assert all(
        f.codec == "opus" and f.kind is MediaKind.AUDIO and f.keyframe and f.config is None
        for f in out
    )
    assert {f.clock for f in out} == {AUDIO_CLOCK} and out[0].arrival == 5.0
    # What the hub gets decodes as Opus, 48 kHz (the transcoder's path to AAC).
    opus = av.CodecContext.create("opus", "r")
    decoded = [fr for f in out for fr in opus.decode(av.Packet(f.payload))]
    assert decoded and decoded[0].sample_rate == AUDIO_CLOCK


def test_empty_opus_frame_gives_nothing() -> None:
    assert OpusPassthrough(lambda: 0.0).decode(JitterFrame(b"", 0)) == []
