"""The RTMP client role against the server role, in memory: the bytes each writes are fed to the
other whole and one byte at a time, and both sides must see the same conversation."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.media import MediaKind, MediaUnit
from ingest.rtmp import flv
from ingest.rtmp.chunk_py import ChunkWriter
from ingest.rtmp.connection import (
    MSG_AUDIO,
    MSG_USER_CONTROL,
    MSG_VIDEO,
    MSG_WINDOW_ACK_SIZE,
    ClientState,
    RTMPClientConnection,
)
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.events import (
    NEED_DATA,
    CommandResult,
    ConnectionClosed,
    ConnectRequested,
    DataMessage,
    HandshakeComplete,
    PublishEnded,
    PublishRequested,
    StatusReceived,
)
from ingest.rtmp.handshake import HANDSHAKE_SIZE, HandshakeError

from .rtmp_client import Replies, drain, new_connection

AVCC = bytes.fromhex("01640028ffe1000467640028") + b"\x01\x00\x0468ee3c80"  # SPS, PPS


def new_client() -> RTMPClientConnection:
    return RTMPClientConnection(clock=lambda: 1234.5, random_bytes=lambda n: b"\xa5" * n)


class Pair:
    """A client and a server core joined by a pipe that moves ``step`` bytes at a time."""

    def __init__(self, step: int, accept: bool = True) -> None:
        self.client, self.server = new_client(), new_connection()
        self.step, self.accept = step, accept
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to send."""
        while True:
            to_server, to_client = self.client.data_to_send(), self.server.data_to_send()
            if not to_server and not to_client:
                return
            for i in range(0, len(to_server), self.step):
                self.server.receive_data(to_server[i : i + self.step])
                self.server_events += drain(self.server, self.accept)
            for i in range(0, len(to_client), self.step):
                self.client.receive_data(to_client[i : i + self.step])
                while (ev := self.client.next_event()) is not NEED_DATA:
                    self.client_events.append(ev)

    def publish(self, key: str = "testkey") -> None:
        self.client.connect("live", "rtmp://127.0.0.1/live")
        self.pump()
        self.client.create_stream(key)
        self.pump()
        self.client.publish(key)
        self.pump()


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("step", [1 << 20, 1, 7], ids=["whole", "byte-by-byte", "7-bytes"])
def test_client_publishes_to_the_server(step: int) -> None:
    pair = Pair(step)
    pair.publish()
    client = pair.client
    assert client.state is ClientState.PUBLISHING and client.stream_id == 1
    assert [type(e) for e in pair.server_events] == [
        HandshakeComplete,
        ConnectRequested,
        PublishRequested,
    ]
    connect, publish = pair.server_events[1], pair.server_events[2]
    assert (connect.app, connect.tc_url, connect.flash_ver) == (
        "live",
        "rtmp://127.0.0.1/live",
        "FMLE/3.0",
    )
    assert (publish.stream_name, publish.message_stream_id, publish.publish_type) == (
        "testkey",
        1,
        "live",
    )
    results = of(pair.client_events, CommandResult)
    assert [(r.name, r.transaction_id) for r in results] == [
        ("_result", 1.0),  # connect
        ("_result", 2.0),  # releaseStream
        ("_result", 4.0),  # createStream
    ]
    assert results[0].info["code"] == "NetConnection.Connect.Success"
    assert results[2].values == (1.0,)
    statuses = of(pair.client_events, StatusReceived)
    assert [(s.message_stream_id, s.level, s.code) for s in statuses] == [
        (1, "status", "NetStream.Publish.Start")
    ]

    # Media and data from the FLV tag writers arrive as the units they describe.
    client.send_media(MSG_VIDEO, 0, flv.avc_sequence_header_body(AVCC))
    client.send_media(MSG_AUDIO, 0, flv.aac_sequence_header_body(b"\x11\x90"))
    client.send_media(MSG_VIDEO, 40, flv.avc_video_body(b"\x00\x00\x00\x01\x65", True, 33))
    client.send_media(MSG_VIDEO, 73, flv.avc_video_body(b"\x00\x00\x00\x01\x41", False, -33))
    client.send_media(MSG_AUDIO, 45, flv.aac_audio_body(b"aac"))
    client.send_data("onCuePoint", {"name": "x"}, timestamp=50)
    pair.pump()
    units = of(pair.server_events, MediaUnit)
    assert [(u.kind, u.codec, u.dts, u.pts, u.keyframe, u.is_config, u.payload) for u in units] == [
        (MediaKind.VIDEO, "h264", 0, 0, True, True, AVCC),
        (MediaKind.AUDIO, "aac", 0, 0, True, True, b"\x11\x90"),
        (MediaKind.VIDEO, "h264", 40, 73, True, False, b"\x00\x00\x00\x01\x65"),
        (MediaKind.VIDEO, "h264", 73, 40, False, False, b"\x00\x00\x00\x01\x41"),
        (MediaKind.AUDIO, "aac", 45, 45, True, False, b"aac"),
    ]
    assert of(pair.server_events, DataMessage) == [DataMessage("onCuePoint", ({"name": "x"},), 50)]

    client.unpublish("testkey")
    pair.pump()
    assert of(pair.server_events, PublishEnded) == [PublishEnded(1)]
    assert of(pair.client_events, StatusReceived)[-1].code == "NetStream.Unpublish.Success"
    assert client.state is ClientState.CONNECTED


def test_commands_queued_before_the_handshake_go_out_behind_c2() -> None:
    client = new_client()
    c0c1 = client.data_to_send()
    assert len(c0c1) == 1 + HANDSHAKE_SIZE and c0c1[0] == 3 and c0c1[5:9] == bytes(4)
    client.connect("live", "rtmp://h/live")
    assert client.data_to_send() == b""  # held until S0+S1+S2 are in
    server = new_connection()
    server.receive_data(c0c1)
    assert drain(server) == []  # the server waits for C2
    s0s1s2 = server.data_to_send()
    client.receive_data(s0s1s2)
    out = client.data_to_send()
    assert out[:HANDSHAKE_SIZE] == s0s1s2[1 : 1 + HANDSHAKE_SIZE]  # C2 echoes S1 (§5.2.4)
    assert client.next_event() == HandshakeComplete(3, False)
    server.receive_data(out)  # C2, Set Chunk Size and connect in one write
    assert [type(e) for e in drain(server, accept=False)] == [HandshakeComplete, ConnectRequested]


def test_refused_publish_is_an_error_status_and_the_client_may_retry() -> None:
    pair = Pair(1 << 20, accept=False)
    pair.client.connect("live", "rtmp://h/live")
    pair.pump()
    pair.server.accept_connect(of(pair.server_events, ConnectRequested)[0])
    pair.pump()
    pair.client.create_stream("nope")
    pair.pump()
    pair.client.publish("nope")
    pair.pump()
    pair.server.reject_publish(of(pair.server_events, PublishRequested)[0], description="no key")
    pair.pump()
    status = of(pair.client_events, StatusReceived)[-1]
    assert (status.level, status.code, status.description) == (
        "error",
        "NetStream.Publish.BadName",
        "no key",
    )
    assert pair.client.state is ClientState.CONNECTED
    with pytest.raises(RuntimeError, match="before publishing"):
        pair.client.send_media(MSG_AUDIO, 0, flv.aac_audio_body(b"x"))


def test_refused_connect_closes_the_client() -> None:
    pair = Pair(1 << 20, accept=False)
    pair.client.connect("live", "rtmp://h/live")
    pair.pump()
    pair.server.reject_connect(of(pair.server_events, ConnectRequested)[0], "bad app")
    pair.pump()
    result = of(pair.client_events, CommandResult)[0]
    assert (result.name, result.info["code"], result.info["description"]) == (
        "_error",
        "NetConnection.Connect.Rejected",
        "bad app",
    )
    assert pair.client.state is ClientState.CLOSED
    with pytest.raises(RuntimeError, match="closed"):
        pair.client.create_stream("x")


def test_server_kick_ends_the_publish() -> None:
    pair = Pair(1 << 20)
    pair.publish()
    pair.server.end_publish("taken over")
    pair.pump()
    assert of(pair.client_events, StatusReceived)[-1].description == "taken over"
    assert pair.client.state is ClientState.CLOSED


def test_client_answers_pings_and_acknowledges_the_window() -> None:
    pair = Pair(1 << 20)
    pair.publish()
    server_writer = ChunkWriter()  # the server core sends neither, so write them by hand
    ping = server_writer.write(2, MSG_USER_CONTROL, 0, 0, b"\x00\x06\x00\x00\x12\x34")
    window = server_writer.write(2, MSG_WINDOW_ACK_SIZE, 0, 0, (100).to_bytes(4, "big"))
    pair.client.receive_data(ping + window)
    replies = Replies()
    replies.skip = 0
    sent = replies.read(pair.client.data_to_send())
    assert (MSG_USER_CONTROL, 0, b"\x00\x07\x00\x00\x12\x34") in sent
    acks = [body for type_id, _, body in sent if type_id == 3]
    assert acks == [pair.client.bytes_received.to_bytes(4, "big")]


def test_events_after_eof_and_protocol_errors() -> None:
    client = new_client()
    with pytest.raises(HandshakeError, match="version 6"):
        client.receive_data(b"\x06" + bytes(HANDSHAKE_SIZE))
    pair = Pair(1 << 20)
    pair.publish()
    with pytest.raises(RTMPProtocolError, match="without a name"):
        pair.client.receive_data(ChunkWriter().write(3, 20, 0, 0, b"\x05"))  # null, no name
    eof = new_client()
    eof.receive_data(b"")
    assert isinstance(eof.next_event(), ConnectionClosed) and eof.state is ClientState.CLOSED
