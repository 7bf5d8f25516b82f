"""Benchmark inputs: an RTMP publish of 720p video, recorded or synthesised, and a results table."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader
from ingest.rtmp.chunk_py import ChunkWriter

RECORDED_PUBLISH = Path(__file__).parents[1] / "tests/ingest/vectors/publish_720p.bin"
HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0 + C1 + C2 precede the chunk stream (§5.2)
VIDEO_CSID, AUDIO_CSID, MSG_AUDIO, MSG_VIDEO = 6, 4, 8, 9
PUBLISH_STREAM_ID = 1


class Message(NamedTuple):
    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class PublishInput(NamedTuple):
    name: str
    source: str
    data: bytes  # chunk-stream bytes, handshake removed


def encode_720p(seconds: int = 2) -> list[Message]:
    """H.264 720×1280 testsrc2 at ~3000 kb/s (libx264 veryfast) plus AAC sine audio, as RTMP
    video/audio messages in timestamp order; FLV tag bodies carry a plain 5- or 2-byte prefix."""
    import av

    video: list[Message] = []
    with av.open(
        f"testsrc2=size=720x1280:rate=30:duration={seconds},format=yuv420p", format="lavfi"
    ) as source:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = 720, 1280, "yuv420p"
        encoder.time_base = Fraction(1, 30)
        encoder.framerate = Fraction(30)
        encoder.bit_rate = 3_000_000
        encoder.options = {"preset": "veryfast", "threads": "1"}  # reproducible sizes
        frames = [*source.decode(video=0), None]
        for frame in frames:
            for packet in encoder.encode(frame):
                pts = packet.pts or 0
                key = 0x17 if packet.is_keyframe else 0x27  # frame type | codec id 7 (AVC)
                body = bytes((key, 1, 0, 0, 0)) + bytes(packet)
                video.append(
                    Message(VIDEO_CSID, MSG_VIDEO, PUBLISH_STREAM_ID, pts * 1000 // 30, body)
                )
    audio: list[Message] = []
    with av.open(
        f"sine=frequency=440:sample_rate=44100:duration={seconds}", format="lavfi"
    ) as sine:
        aac = av.CodecContext.create("aac", "w")
        aac.sample_rate = 44100
        aac.layout = "mono"
        aac.format = "fltp"
        aac.bit_rate = 128_000
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100)
        samples = [r for f in sine.decode(audio=0) for r in resampler.resample(f)]
        for packet in [p for sample in samples for p in aac.encode(sample)] + aac.encode(None):
            ms = (packet.pts or 0) * 1000 // 44100
            body = bytes((0xAF, 1)) + bytes(packet)  # AAC raw frame
            audio.append(Message(AUDIO_CSID, MSG_AUDIO, PUBLISH_STREAM_ID, ms, body))
    return sorted(video + audio, key=lambda m: (m.timestamp, m.type_id))


def write_chunks(messages: list[Message], chunk_size: int) -> bytes:
    """Serialise ``messages``; announce ``chunk_size`` first unless it is the default 128."""
    writer = ChunkWriter()
    out = bytearray()
    if chunk_size != writer.chunk_size:
        out += writer.write(2, 1, 0, 0, chunk_size.to_bytes(4, "big"))
        writer.chunk_size = chunk_size
    for m in messages:
        out += writer.write(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload)
    return bytes(out)


def read_messages(data: bytes) -> list[Message]:
    reader = PyChunkStreamReader()
    reader.feed(data)
    messages = []
    while (msg := reader.next_message()) is not None:
        if msg.type_id not in (1, 2):  # control messages are the reader's, not the stream's
            messages.append(Message(*msg))
    return messages


@pytest.fixture(scope="session")
def publish_inputs() -> dict[str, PublishInput]:
    """``publish``: the recorded ffmpeg publish when present, else the synthetic one at 4096-byte
    chunks; ``publish-chunk128``: the same messages at the default chunk size (many encoders
    never raise it)."""
    if RECORDED_PUBLISH.exists():
        source = f"recorded {RECORDED_PUBLISH.name}"
        data = RECORDED_PUBLISH.read_bytes()[HANDSHAKE_BYTES:]
        messages = read_messages(data)
    else:
        source = "synthetic: PyAV libx264 veryfast 3000k 720x1280 testsrc2 2 s + AAC"
        messages = encode_720p()
        data = write_chunks(messages, 4096)
    return {
        "publish": PublishInput("publish", source, data),
        "publish-chunk128": PublishInput(
            "publish-chunk128",
            f"{source}, rewritten at 128-byte chunks",
            write_chunks(messages, 128),
        ),
    }


Throughput = dict[tuple[str, str], dict[str, Any]]  # (input, reader) -> extra_info
THROUGHPUT = pytest.StashKey[Throughput]()


@pytest.fixture(scope="session")
def throughput(request: pytest.FixtureRequest) -> Throughput:
    """Results of the throughput benchmarks, printed as one table at the end of the run."""
    return request.config.stash.setdefault(THROUGHPUT, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(THROUGHPUT, {})
    if not results:
        return
    tr = terminalreporter
    tr.section("RTMP chunk stream reader throughput (MB = 10^6 bytes, median round)")
    tr.write_line(f"{'input':<18}{'bytes':>10}{'py MB/s':>10}{'c MB/s':>10}{'c/py':>8}")
    for name in sorted({key[0] for key in results}):
        py, c = results.get((name, "py-reader")), results.get((name, "c-reader"))
        size = (py or c or {}).get("bytes", 0)
        py_rate = f"{py['mb_per_s']:.0f}" if py else "-"
        c_rate = f"{c['mb_per_s']:.0f}" if c else "-"
        ratio = f"{c['mb_per_s'] / py['mb_per_s']:.1f}x" if py and c else "-"
        tr.write_line(f"{name:<18}{size:>10}{py_rate:>10}{c_rate:>10}{ratio:>8}")
