"""Driving the RTMP server core in tests: recorded vectors, hand-made handshakes, the client
role's message writer, and a reader for the server's replies."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from ingest.media import MediaUnit
from ingest.rtmp import amf0
from ingest.rtmp.chunk_py import ChunkStreamReader
from ingest.rtmp.connection import RTMPClientMessages, RTMPLimits, RTMPServerConnection
from ingest.rtmp.events import NEED_DATA, ConnectionClosed, ConnectRequested, PublishRequested
from ingest.rtmp.handshake import GENUINE_FP_KEY, HANDSHAKE_SIZE

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
HANDSHAKE_BYTES = 1 + 2 * HANDSHAKE_SIZE


def vector(name: str) -> tuple[bytes, dict[str, Any]]:
    """A recorded vector's bytes and its expected numbers."""
    return (VECTORS / f"{name}.bin").read_bytes(), json.loads(
        (VECTORS / f"{name}.json").read_text()
    )


def plain_c0c1() -> bytes:
    return b"\x03" + b"\x00" * 8 + bytes(i & 0xFF for i in range(HANDSHAKE_SIZE - 8))


def digest_c0c1(base: int = 8) -> bytes:
    """A Flash-9-style C1 with its digest at offset scheme ``base`` (8 or 772)."""
    c1 = bytearray(b"\x00\x00\x00\x00\x09\x00\x7c\x02" + bytes((i * 7) & 0xFF for i in range(1528)))
    off = base + 4 + sum(c1[base : base + 4]) % 728
    c1[off : off + 32] = hmac.new(
        GENUINE_FP_KEY[:30], c1[:off] + c1[off + 32 :], hashlib.sha256
    ).digest()
    return b"\x03" + bytes(c1)


class Client(RTMPClientMessages):
    """The client role's message writer, with the tcUrl the tests expect (host "h")."""

    def connect(self, app: str = "live", tc_url: str = "", **extra: Any) -> bytes:
        return super().connect(app, tc_url or f"rtmp://h/{app}", **extra)


def handshake() -> bytes:
    return plain_c0c1() + bytes(HANDSHAKE_SIZE)


def new_connection(limits: RTMPLimits | None = None) -> RTMPServerConnection:
    return RTMPServerConnection(limits, clock=lambda: 1234.5, random_bytes=lambda n: b"\x5a" * n)


def drain(conn: RTMPServerConnection, accept: bool = True) -> list[Any]:
    """Pop events until NEED_DATA or ConnectionClosed, auto-accepting connect/publish."""
    out: list[Any] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if accept and isinstance(ev, ConnectRequested):
            conn.accept_connect(ev)
        elif accept and isinstance(ev, PublishRequested):
            conn.accept_publish(ev)
        elif isinstance(ev, ConnectionClosed):
            return out


def feed(conn: RTMPServerConnection, data: bytes, step: int, accept: bool = True) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step])
        out += drain(conn, accept)
    return out


def publishing(client: Client | None = None) -> tuple[RTMPServerConnection, Client, list[Any]]:
    """A connection that has accepted connect and publish of ``testkey`` on stream 1."""
    client = client or Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect() + client.publish_preamble() + client.publish())
    events = drain(conn)
    return conn, client, events


def units(events: list[Any]) -> list[MediaUnit]:
    return [e for e in events if isinstance(e, MediaUnit)]


class Replies:
    """Reads the server's reply bytes (after S0+S1+S2) back into (type, stream id, values)."""

    def __init__(self) -> None:
        self.reader = ChunkStreamReader()
        self.skip = HANDSHAKE_BYTES

    def read(self, data: bytes) -> list[tuple[int, int, Any]]:
        cut = min(self.skip, len(data))
        self.skip -= cut
        self.reader.feed(data[cut:])
        out: list[tuple[int, int, Any]] = []
        while (msg := self.reader.next_message()) is not None:
            body: Any = amf0.decode_all(msg.payload) if msg.type_id == 20 else msg.payload
            out.append((msg.type_id, msg.stream_id, body))
        return out

    def statuses(self, data: bytes) -> list[tuple[str, dict[str, Any]]]:
        """(command name, info object) of each command reply."""
        return [(v[0], v[-1]) for t, _, v in self.read(data) if t == 20]
