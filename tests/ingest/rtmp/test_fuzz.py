"""Fuzz the core: only events or RTMPProtocolError escape, and buffered memory stays bounded."""

from __future__ import annotations

from typing import Any
from unittest import mock

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from ingest.media import MediaUnit
from ingest.rtmp import connection
from ingest.rtmp.chunk_py import ChunkMessage
from ingest.rtmp.connection import RTMPLimits, RTMPServerConnection
from ingest.rtmp.errors import ChunkStreamError, RTMPProtocolError
from ingest.rtmp.events import (
    NEED_DATA,
    ConnectionClosed,
    ConnectRequested,
    DataMessage,
    HandshakeComplete,
    MetaData,
    PublishEnded,
    PublishRequested,
)

from .rtmp_client import HANDSHAKE_BYTES, Client, handshake, vector

LIMITS = RTMPLimits(
    max_chunk_size=1 << 16,
    max_message_size=32 << 10,
    max_buffered=64 << 10,
    max_chunk_streams=8,
    max_amf_items=32,
    max_amf_values=256,
    max_message_streams=4,
    max_output=64 << 10,
)
EVENTS = (
    HandshakeComplete,
    ConnectRequested,
    PublishRequested,
    MetaData,
    DataMessage,
    PublishEnded,
    ConnectionClosed,
    MediaUnit,
)
MEMORY_BOUND = 3 * LIMITS.max_buffered + LIMITS.max_chunk_size + 64
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_client = Client()
PREFIX = handshake() + _client.connect() + _client.publish_preamble() + _client.publish()
PLAIN, _ = vector("publish_plain")
PLAIN = PLAIN[:24_000]  # handshake, commands, metadata, configs and the first frames


def pump(reader_cls: type, pieces: list[bytes]) -> list[Any]:
    """Feed pieces, auto-accepting; return events. Raises only RTMPProtocolError."""
    with mock.patch.object(connection, "ChunkStreamReader", reader_cls):
        conn = RTMPServerConnection(LIMITS, clock=lambda: 0.0)
    events: list[Any] = []
    try:
        for piece in [*pieces, b""]:
            conn.receive_data(piece)
            while True:
                ev = conn.next_event()
                if ev is NEED_DATA:
                    break
                assert isinstance(ev, EVENTS), ev
                events.append(ev)
                if isinstance(ev, ConnectRequested):
                    conn.accept_connect(ev)
                elif isinstance(ev, PublishRequested):
                    conn.accept_publish(ev)
                elif isinstance(ev, ConnectionClosed):
                    break
                assert conn.buffered <= MEMORY_BOUND
            assert conn.buffered <= MEMORY_BOUND
            assert len(conn.data_to_send()) <= LIMITS.max_output + 4096
    except RTMPProtocolError as exc:
        error = type(exc).__name__
    else:
        error = "none"
    if currently_in_test_context():  # statistics for --hypothesis-show-statistics
        event(f"error: {error}")
        event(f"media units: {min(sum(isinstance(e, MediaUnit) for e in events), 5)}+")
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [p for p in pieces if p]  # b"" would mean EOF


@SETTINGS
@given(st.binary(max_size=4000))
def test_random_bytes(chunk_reader_cls: type, data: bytes) -> None:
    pump(chunk_reader_cls, [data] if data else [])


@SETTINGS
@given(st.binary(max_size=4000), st.lists(st.integers(0, 5000), max_size=6))
def test_random_bytes_after_a_publish(chunk_reader_cls: type, data: bytes, cuts: list[int]) -> None:
    pump(chunk_reader_cls, [PREFIX, *split(data, cuts)])


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete"]),
            st.integers(HANDSHAKE_BYTES, len(PLAIN) - 1),
            st.binary(min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(0, len(PLAIN)), max_size=8),
)
def test_mutated_vector(
    chunk_reader_cls: type, edits: list[tuple[str, int, bytes]], cuts: list[int]
) -> None:
    data = bytearray(PLAIN)
    for op, pos, blob in edits:
        pos = min(pos, len(data) - 1)
        if op == "flip":
            data[pos] ^= blob[0] or 1
        elif op == "set":
            data[pos : pos + len(blob)] = blob
        elif op == "insert":
            data[pos:pos] = blob
        else:
            del data[pos : pos + len(blob)]
    pump(chunk_reader_cls, split(bytes(data), cuts))


def test_unmutated_prefix_still_publishes(chunk_reader_cls: type) -> None:
    events = pump(chunk_reader_cls, [PLAIN])
    assert sum(isinstance(e, MediaUnit) for e in events) > 5


@SETTINGS
@given(st.binary(max_size=3000), st.lists(st.integers(1, 600), min_size=1, max_size=8))
def test_chunk_reader_random_bytes(chunk_reader_cls: type, data: bytes, steps: list[int]) -> None:
    reader = chunk_reader_cls(
        max_chunk_size=4096, max_message_size=2048, max_buffered=8192, max_chunk_streams=4
    )
    pos, i = 0, 0
    try:
        while pos < len(data):
            step = steps[i % len(steps)]
            reader.feed(data[pos : pos + step])
            pos += step
            i += 1
            while (msg := reader.next_message()) is not None:
                assert ChunkMessage(*msg) == msg and len(msg[4]) <= 2048
            assert reader.buffered <= 2 * 8192 + 4096 + 18
    except ChunkStreamError:
        pass
