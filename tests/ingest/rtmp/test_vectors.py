"""Recorded ffmpeg publishes through RTMPServerConnection: whole, in small steps, byte by byte."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest

from ingest.codecs import parse_audio_specific_config, parse_avcc
from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from ingest.rtmp import connection
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.events import (
    ConnectionClosed,
    ConnectRequested,
    HandshakeComplete,
    MetaData,
    PublishEnded,
    PublishRequested,
)

from .rtmp_client import Replies, drain, feed, new_connection, vector

SMALL = [
    "publish_plain",
    "publish_bframes",
    "publish_audio_only",
    "publish_video_only",
    "publish_chunk60000",
]


@pytest.fixture(autouse=True)
def _both_readers(chunk_reader_cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every vector through the pure-Python reader and the Cython twin."""
    monkeypatch.setattr(connection, "ChunkStreamReader", chunk_reader_cls)


def run(name: str, steps: list[tuple[int, int]]) -> tuple[list[Any], bytes]:
    """Feed ``name`` in (up to offset, step size) pieces, then EOF; return events and replies."""
    data, _ = vector(name)
    conn = new_connection()
    events: list[Any] = []
    out = b""
    pos = 0
    for end, step in steps:
        end = min(end, len(data))
        events += feed(conn, data[pos:end], step)
        out += conn.data_to_send()
        pos = end
    conn.receive_data(b"")
    events += drain(conn)
    assert conn.buffered == 0
    return events, out + conn.data_to_send()


def check(name: str, events: list[Any], replies: bytes) -> None:
    _, expected = vector(name)
    control = [e for e in events if not isinstance(e, MediaUnit)]
    kinds = [type(e) for e in control]
    has_video = "video" in expected
    assert kinds == [
        HandshakeComplete,
        ConnectRequested,
        PublishRequested,
        MetaData,
        PublishEnded,
        ConnectionClosed,
    ]
    hs, connect, publish, meta = control[:4]
    assert hs.client_version == 3 and hs.digest  # ffmpeg sends a digest C1
    assert connect.app == "live" and connect.tc_url.endswith("/live")
    assert connect.flash_ver.startswith("FMLE/3.0")
    assert (publish.stream_name, publish.query, publish.publish_type) == ("testkey", "", "live")
    assert publish.message_stream_id == 1
    if has_video:
        assert (meta.values["width"], meta.values["height"]) == (
            expected["video"]["width"],
            expected["video"]["height"],
        )
    # All media sits between PublishRequested and PublishEnded.
    first = events.index(publish)
    last = events.index(control[4])
    assert all(isinstance(e, MediaUnit) for e in events[first + 1 : last] if e is not meta)
    units = [e for e in events if isinstance(e, MediaUnit)]
    assert all(u.timebase == MILLISECONDS and u.arrival == 1234.5 for u in units)
    for kind, key in ((MediaKind.VIDEO, "video"), (MediaKind.AUDIO, "audio")):
        mine = [u for u in units if u.kind is kind]
        if key not in expected:
            assert not mine
            continue
        want = expected[key]
        configs = [u for u in mine if u.is_config]
        frames = [u for u in mine if not u.is_config]
        assert len(configs) == 1 and configs[0].payload.hex() == want["extradata"]
        assert len(frames) == want["frames"]
        assert sum(u.keyframe for u in frames) == want["keyframes"]
        payloads = b"".join(u.payload for u in frames)
        assert hashlib.sha256(payloads).hexdigest() == want["payload_sha256"]
        dts = [u.dts for u in frames]
        assert dts == sorted(dts), "DTS must not go backwards"
        assert all(u.pts >= u.dts for u in frames)
        assert {u.codec for u in mine} == {"h264" if kind is MediaKind.VIDEO else "aac"}
        if kind is MediaKind.VIDEO:
            sps = parse_avcc(configs[0].payload).sps_info
            assert sps is not None and (sps.width, sps.height) == (want["width"], want["height"])
            differs = sum(u.pts != u.dts for u in frames)
            assert (differs > 0) == ("bframes" in name)
        else:
            asc = parse_audio_specific_config(configs[0].payload)
            assert (asc.object_type, asc.sample_rate, asc.channels) == (2, 48000, 1)
    statuses = Replies().statuses(replies)
    codes = [info.get("code") for _, info in statuses if isinstance(info, dict)]
    assert codes[:2] == ["NetConnection.Connect.Success", "NetStream.Publish.Start"]
    assert "NetStream.Unpublish.Success" in codes


@pytest.mark.parametrize("name", [*SMALL, "publish_720p"])
def test_whole(name: str) -> None:
    check(name, *run(name, [(1 << 30, 1 << 30)]))


@pytest.mark.parametrize("name", SMALL)
def test_small_steps(name: str) -> None:
    check(name, *run(name, [(1 << 30, 4093)]))


@pytest.mark.parametrize("name", SMALL)
def test_one_byte_at_a_time(name: str) -> None:
    check(name, *run(name, [(1 << 30, 1)]))


def test_mixed_steps() -> None:
    steps = [(1, 1), (1537, 1536), (3100, 5), (20_000, 1), (60_000, 65536), (1 << 30, 333)]
    check("publish_bframes", *run("publish_bframes", steps))


@pytest.mark.parametrize("garbage", [b"\x00" * 64, bytes(range(256)) * 4, b"\xff" * 3000])
def test_trailing_garbage_after_publish_ended(garbage: bytes) -> None:
    data, _ = vector("publish_plain")
    conn = new_connection()
    conn.receive_data(data)
    events = drain(conn)
    assert isinstance(events[-1], PublishEnded)
    conn.receive_data(garbage)
    with contextlib.suppress(RTMPProtocolError):
        drain(conn)
    conn.receive_data(b"")
    with contextlib.suppress(RTMPProtocolError):
        assert isinstance(drain(conn)[-1], ConnectionClosed)
