"""RTMPServerConnection state machine: commands, replies, refusals, control messages, bounds."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.media import MediaKind, MediaUnit
from ingest.rtmp import amf0, flv
from ingest.rtmp.connection import RTMPLimits, RTMPServerConnection, State, split_stream_name
from ingest.rtmp.errors import RTMPProtocolError
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
from ingest.rtmp.flv import UnsupportedMediaError

from .rtmp_client import (
    Client,
    Replies,
    drain,
    handshake,
    new_connection,
    publishing,
    units,
)

AVCC = bytes.fromhex("0164000dffe1001a6764000dacd943029e7f0110000003001000000303c0f14299600100")


def state(conn: RTMPServerConnection) -> State:
    """Read the state through a call, so type checkers do not keep an earlier narrowing."""
    return conn.state


def codes(replies: Replies, data: bytes) -> list[Any]:
    return [
        info.get("code") if isinstance(info, dict) else info for _, info in replies.statuses(data)
    ]


def test_connect_is_a_decision_and_parsing_pauses() -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect(extra="x") + client.publish_preamble())
    assert isinstance(conn.next_event(), HandshakeComplete)
    ev = conn.next_event()
    assert isinstance(ev, ConnectRequested)
    assert (ev.app, ev.tc_url, ev.flash_ver, ev.transaction_id) == (
        "live",
        "rtmp://h/live",
        "FMLE/3.0",
        1.0,
    )
    assert ev.properties["extra"] == "x"
    assert state(conn) is State.CONNECT_PENDING
    assert conn.next_event() is NEED_DATA  # createStream waits for our answer
    replies = Replies()
    out = conn.data_to_send()
    assert len(out) == 1 + 2 * 1536 and replies.read(out) == []
    conn.accept_connect(ev)
    assert state(conn) is State.CONNECTED
    msgs = replies.read(conn.data_to_send())
    assert [(t, body) for t, _, body in msgs[:3]] == [
        (5, (2_500_000).to_bytes(4, "big")),
        (6, (2_500_000).to_bytes(4, "big") + b"\x02"),
        (1, (4096).to_bytes(4, "big")),
    ]
    name, tid, props, info = msgs[3][2]
    assert (name, tid, props["fmsVer"]) == ("_result", 1.0, "FMS/3,0,1,123")
    assert info["code"] == "NetConnection.Connect.Success" and info["objectEncoding"] == 0.0
    assert "fourCcList" not in info
    assert drain(conn) == []  # releaseStream, FCPublish, createStream: replies only
    assert [body[:3] for t, _, body in replies.read(conn.data_to_send())] == [
        ["_result", 2.0, None],
        ["onFCPublish", 0.0, None],
        ["_result", 4.0, None],
    ]
    with pytest.raises(RuntimeError, match="no such pending request"):
        conn.accept_connect(ev)


def test_reply_chunk_size_applies_to_replies() -> None:
    conn, _, _ = publishing()
    out = conn.data_to_send()
    assert Replies().read(out)[-1][2][3]["code"] == "NetStream.Publish.Start"
    assert conn._writer.chunk_size == 4096


def test_enhanced_rtmp_fourcc_list_is_answered() -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect(fourCcList=["av01", "vp09", "hvc1", "vvc1"]))
    ev = drain(conn, accept=False)[-1]
    conn.accept_connect(ev)
    info = Replies().read(conn.data_to_send())[-1][2][3]
    assert info["fourCcList"] == ["hvc1", "av01", "vp09"]


def test_reject_connect() -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect(app="nope"))
    ev = drain(conn, accept=False)[-1]
    conn.reject_connect(ev, "unknown application 'nope'")
    assert state(conn) is State.CLOSED
    body = Replies().read(conn.data_to_send())[-1][2]
    assert body[0] == "_error" and body[3]["code"] == "NetConnection.Connect.Rejected"
    assert body[3]["description"] == "unknown application 'nope'"
    conn.receive_data(client.publish_preamble())
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_publish_accept_media_and_unpublish() -> None:
    conn, client, events = publishing()
    pub = events[-1]
    assert isinstance(pub, PublishRequested)
    assert (pub.stream_name, pub.query, pub.publish_type, pub.app) == (
        "testkey",
        "",
        "live",
        "live",
    )
    assert state(conn) is State.PUBLISHING and conn.publishing == pub
    replies = Replies()
    msgs = replies.read(conn.data_to_send())
    assert msgs[-2] == (4, 0, b"\x00\x00\x00\x00\x00\x01")  # User Control Stream Begin 1
    assert msgs[-1][1] == 1 and msgs[-1][2][3]["code"] == "NetStream.Publish.Start"
    conn.receive_data(
        client.data("@setDataFrame", "onMetaData", amf0.ECMAArray(width=720.0, height=1280.0))
        + client.media(9, b"\x17\x00\x00\x00\x00" + AVCC, 0)
        + client.media(9, b"\x17\x01\x00\x00\x21" + b"\x00" * 300, 40)
        + client.media(8, b"\xaf\x01aac", 45)
        + client.data("onCuePoint", {"name": "x"}, timestamp=50)
        + client.data("onMetaData", {"fps": 30.0})
        + client.command("FCUnpublish", 6.0, None, "testkey")
        + client.command("deleteStream", 7.0, None, 1.0)
    )
    evs = drain(conn)
    assert evs[0] == MetaData({"width": 720.0, "height": 1280.0})
    video = [e for e in evs if isinstance(e, MediaUnit) and e.kind is MediaKind.VIDEO]
    assert video[0].is_config and video[0].payload == AVCC
    assert (video[1].dts, video[1].pts, len(video[1].payload)) == (40, 73, 300)
    assert evs[4] == DataMessage("onCuePoint", ({"name": "x"},), 50)
    assert evs[5] == MetaData({"fps": 30.0})
    assert evs[6:] == [PublishEnded(1)]  # once, though deleteStream followed
    assert state(conn) is State.CONNECTED and conn.publishing is None
    assert "NetStream.Unpublish.Success" in codes(replies, conn.data_to_send())


def test_close_stream_ends_publish() -> None:
    conn, client, _ = publishing()
    conn.receive_data(client.command("closeStream", 0.0, None, stream_id=1))
    assert drain(conn) == [PublishEnded(1)]


def test_publish_query_is_split() -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(
        handshake() + client.connect() + client.publish_preamble() + client.publish("key?token=abc")
    )
    pub = drain(conn, accept=True)[-1]
    assert (pub.stream_name, pub.query) == ("key", "token=abc")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("?x=1", "empty"),
        ("a/b", "slash"),
        ("a\\b", "slash"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("a\x00b", "control characters"),
        ("ab?q=\n", "control characters"),
        ("k" * 257, "longer than 256"),
        (None, "missing"),
        (5.0, "missing"),
    ],
)
def test_bad_publish_names(name: Any, reason: str) -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect() + client.publish_preamble())
    drain(conn)
    replies = Replies()
    replies.read(conn.data_to_send())
    conn.receive_data(client.command("publish", 5.0, None, name, "live", stream_id=1))
    with pytest.raises(RTMPProtocolError, match=f"publish refused: .*{reason}"):
        conn.next_event()
    msgs = replies.read(conn.data_to_send())
    info = msgs[-1][2][3]
    assert info["level"] == "error" and info["code"] == "NetStream.Publish.BadName"
    assert reason.strip("'") in info["description"]
    assert state(conn) is State.CLOSED
    with pytest.raises(RTMPProtocolError):
        conn.next_event()  # the error sticks


def test_split_stream_name_ok() -> None:
    assert split_stream_name("shoe-launch_2", 256) == ("shoe-launch_2", "")
    assert split_stream_name("k?a=1?b", 256) == ("k", "a=1?b")


def test_reject_publish_keeps_connection() -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect() + client.publish_preamble() + client.publish())
    evs = drain(conn, accept=False)
    conn.accept_connect(evs[1])
    pub = drain(conn, accept=False)[-1]
    assert isinstance(pub, PublishRequested) and state(conn) is State.PUBLISH_PENDING
    conn.reject_publish(pub, code="NetStream.Publish.BadName", description="stream key unknown")
    info = Replies().read(conn.data_to_send())[-1][2][3]
    assert (info["code"], info["description"]) == (
        "NetStream.Publish.BadName",
        "stream key unknown",
    )
    assert state(conn) is State.CONNECTED
    conn.receive_data(client.media(9, b"\x17\x01\x00\x00\x00", 0))
    with pytest.raises(RTMPProtocolError, match="video message before publish was accepted"):
        conn.next_event()


def test_end_publish_tells_the_client() -> None:
    conn, client, _ = publishing()
    replies = Replies()
    replies.read(conn.data_to_send())
    conn.end_publish("stream taken over by another publisher")
    info = replies.read(conn.data_to_send())[-1]
    assert info[1] == 1
    assert info[2][3] == {
        "level": "error",
        "code": "NetStream.Publish.BadConnection",
        "description": "stream taken over by another publisher",
    }
    assert state(conn) is State.CLOSED
    conn.receive_data(client.media(8, b"\xaf\x01x", 0))
    assert conn.next_event() is NEED_DATA


@pytest.mark.parametrize("type_id", [8, 9, 18])
def test_media_or_data_before_publish(type_id: int) -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect() + client.publish_preamble())
    drain(conn)
    msg = client.data("onMetaData", {}) if type_id == 18 else client.media(type_id, b"\xaf\x01", 0)
    conn.receive_data(msg)
    with pytest.raises(RTMPProtocolError, match="before publish was accepted"):
        conn.next_event()


def test_media_on_another_stream() -> None:
    conn, client, _ = publishing()
    conn.receive_data(client.media(8, b"\xaf\x01x", 0, stream_id=2))
    with pytest.raises(RTMPProtocolError, match="on message stream 2, publishing on 1"):
        conn.next_event()


def test_unsupported_codec_is_refused_with_onstatus() -> None:
    conn, client, _ = publishing()
    replies = Replies()
    replies.read(conn.data_to_send())
    conn.receive_data(client.media(9, b"\x14\x00", 0))
    with pytest.raises(UnsupportedMediaError, match="On2 VP6"):
        conn.next_event()
    info = replies.read(conn.data_to_send())[-1][2][3]
    assert info["code"] == "NetStream.Publish.Rejected" and "On2 VP6" in info["description"]


def test_units_read_with_a_refused_message_go_out_before_the_refusal() -> None:
    # One read: two good units, a data message, another unit, then a codec we refuse. The
    # units are read in one reader call; each is still delivered before the error is raised.
    conn, client, _ = publishing()
    replies = Replies()
    replies.read(conn.data_to_send())
    conn.receive_data(
        client.media(9, b"\x17\x01\x00\x00\x00nal", 40)
        + client.media(8, b"\xaf\x01aac", 41)
        + client.data("onCuePoint", {"name": "x"}, timestamp=42)
        + client.media(8, b"\xaf\x01aa2", 43)
        + client.media(9, b"\x14\x00", 44)
    )
    first, second, data, third = (conn.next_event() for _ in range(4))
    assert isinstance(first, MediaUnit) and (first.dts, first.payload) == (40, b"nal")
    assert isinstance(second, MediaUnit) and (second.dts, second.payload) == (41, b"aac")
    assert isinstance(data, DataMessage) and (data.name, data.timestamp) == ("onCuePoint", 42)
    assert isinstance(third, MediaUnit) and third.dts == 43
    for _ in range(2):  # raised, and again when asked again
        with pytest.raises(UnsupportedMediaError, match="On2 VP6"):
            conn.next_event()
    assert state(conn) is State.CLOSED
    info = replies.read(conn.data_to_send())[-1][2][3]
    assert info["code"] == "NetStream.Publish.Rejected"


def test_ping_window_ack_and_peer_bandwidth() -> None:
    conn, client, _ = publishing()
    replies = Replies()
    replies.read(conn.data_to_send())
    conn.receive_data(
        client.control(4, b"\x00\x06\x00\x00\x12\x34")  # PingRequest
        + client.control(4, b"\x00\x03\x00\x00\x00\x01\x00\x00\x0b\xb8")  # SetBufferLength
        + client.control(5, (5_000_000).to_bytes(4, "big"))
        + client.control(3, (1234).to_bytes(4, "big"))
        + client.control(6, b"\x00\x10\x00\x00\x02")
    )
    assert drain(conn) == []
    assert replies.read(conn.data_to_send()) == [(4, 0, b"\x00\x07\x00\x00\x12\x34")]
    assert (conn.peer_window_ack_size, conn.peer_acknowledged) == (5_000_000, 1234)


def test_acknowledgement_after_a_window() -> None:
    conn, client, _ = publishing()
    replies = Replies()
    replies.read(conn.data_to_send())
    frame = client.media(9, b"\x27\x01\x00\x00\x00" + bytes(200_000), 0)
    acks = []
    for _ in range(30):
        conn.receive_data(frame)
        assert len(units(drain(conn))) == 1
        acks += [m for m in replies.read(conn.data_to_send()) if m[0] == 3]
    assert 2 * 2_500_000 < conn.bytes_received < 3 * 2_500_000
    seqs = [int.from_bytes(body, "big") for _, _, body in acks]
    assert len(seqs) == 2 and 2_500_000 <= seqs[0] < 2_800_000 <= 5_000_000 <= seqs[1]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (("getStreamLength", 9.0, None, "testkey"), "NetConnection.Call.Failed"),
        (("_checkbw", 9.0, None), "NetConnection.Call.Failed"),
        (("play", 0.0, None, "testkey"), "NetStream.Play.Failed"),
    ],
)
def test_unsupported_commands_are_refused_not_fatal(command: tuple[Any, ...], code: str) -> None:
    conn, client, _ = publishing()
    replies = Replies()
    replies.read(conn.data_to_send())
    conn.receive_data(client.command(*command, stream_id=1) + client.media(8, b"\xaf\x01x", 5))
    assert len(units(drain(conn))) == 1
    assert codes(replies, conn.data_to_send()) == [code]


def test_notifications_without_transaction_get_no_reply() -> None:
    conn, client, _ = publishing()
    conn.data_to_send()
    conn.receive_data(client.command("someNotify", 0.0, None) + client.command("_result", 1.0))
    assert drain(conn) == [] and conn.data_to_send() == b""


def test_amf3_command_and_data_with_format_byte() -> None:
    client = Client()
    conn = new_connection()
    connect = b"\x00" + amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
    conn.receive_data(handshake() + client.writer.write(3, 17, 0, 0, connect))
    assert isinstance(drain(conn)[-1], ConnectRequested)
    conn2, client2, _ = publishing()
    data = b"\x00" + amf0.encode("@setDataFrame", "onMetaData", {"width": 1.0})
    conn2.receive_data(client2.writer.write(4, 15, 1, 0, data))
    assert drain(conn2) == [MetaData({"width": 1.0})]


def test_timestamps_unwrap_across_2_32() -> None:
    conn, client, _ = publishing()
    stamps = [0xFFFFFFF0 - 40, 0xFFFFFFF0, 0x10, 0x30]
    conn.receive_data(b"".join(client.media(8, b"\xaf\x01x", t) for t in stamps))
    assert [u.dts for u in units(drain(conn))] == [
        0xFFFFFFF0 - 40,
        0xFFFFFFF0,
        (1 << 32) + 0x10,
        (1 << 32) + 0x30,
    ]


def test_aggregate_message() -> None:
    conn, client, _ = publishing()

    def sub(type_id: int, ts: int, body: bytes) -> bytes:
        head = bytes((type_id,)) + len(body).to_bytes(3, "big") + ts.to_bytes(3, "big")
        return (
            head + bytes((ts >> 24,)) + b"\x00\x00\x00" + body + (11 + len(body)).to_bytes(4, "big")
        )

    agg = sub(8, 1000, b"\xaf\x01a") + sub(9, 1010, b"\x27\x01\x00\x00\x00v")
    conn.receive_data(client.writer.write(5, 22, 1, 5000, agg))
    got = units(drain(conn))
    assert [(u.kind, u.dts, u.payload) for u in got] == [
        (MediaKind.AUDIO, 5000, b"a"),
        (MediaKind.VIDEO, 5010, b"v"),
    ]
    conn.receive_data(client.writer.write(5, 22, 1, 0, agg[:-6]))
    with pytest.raises(RTMPProtocolError, match="aggregate sub-message truncated"):
        conn.next_event()


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (lambda c: c.command("createStream", 2.0, None), "'createStream' before connect"),
        (lambda c: c.connect() + c.connect(), "second connect"),
        (lambda c: c.command(1.0, 2.0), "without a name and transaction id"),
        (lambda c: c.command("connect", 1.0, "notanobject"), "connect without a command object"),
        (lambda c: c.control(4, b"\x00"), "shorter than 2 bytes"),
        (lambda c: c.control(4, b"\x00\x06\x00"), "PingRequest is not 6 bytes"),
        (lambda c: c.control(5, b"\x00"), "Window Acknowledgement Size payload is not 4 bytes"),
        (lambda c: c.writer.write(3, 99, 0, 0, b""), "unknown RTMP message type 99"),
        (lambda c: c.writer.write(3, 20, 0, 0, b"\x11"), "AVM\\+"),
        (lambda c: c.connect() + c.publish(), "publish on message stream 1 that was not created"),
    ],
)
def test_protocol_errors(messages: Any, error: str) -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + messages(client))
    with pytest.raises(RTMPProtocolError, match=error):
        drain(conn)
    assert state(conn) is State.CLOSED


def test_create_stream_is_bounded() -> None:
    client = Client()
    conn = new_connection(RTMPLimits(max_message_streams=2))
    conn.receive_data(handshake() + client.connect())
    drain(conn)
    conn.receive_data(b"".join(client.command("createStream", 2.0 + i, None) for i in range(3)))
    with pytest.raises(RTMPProtocolError, match="more than 2 createStream"):
        drain(conn)


def test_second_publish_is_refused() -> None:
    conn, client, _ = publishing()
    conn.receive_data(client.publish("other"))
    with pytest.raises(RTMPProtocolError, match="publish while already publishing"):
        conn.next_event()


def test_eof_and_after() -> None:
    conn = new_connection()
    conn.receive_data(handshake()[:100])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert state(conn) is State.CLOSED
    with pytest.raises(RuntimeError, match="after EOF"):
        conn.receive_data(b"x")


def test_eof_while_a_decision_is_pending() -> None:
    client = Client()
    conn = new_connection()
    conn.receive_data(handshake() + client.connect())
    assert isinstance(drain(conn, accept=False)[-1], ConnectRequested)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_unparsed_input_is_bounded() -> None:
    conn = new_connection(RTMPLimits(max_buffered=10_000))
    conn.receive_data(handshake())
    drain(conn)
    conn.receive_data(bytes(6000))
    conn.receive_data(bytes(6000))
    with pytest.raises(RTMPProtocolError, match="more than 10000 received bytes wait unparsed"):
        conn.next_event()


def test_unparsed_input_is_bounded_while_publishing() -> None:
    # Publishing reads go straight to the chunk reader; its bound holds them.
    conn = new_connection(RTMPLimits(max_buffered=10_000))
    client = Client()
    conn.receive_data(handshake() + client.connect() + client.publish_preamble() + client.publish())
    drain(conn)
    assert state(conn) is State.PUBLISHING
    start = client.media(9, flv.avc_video_body(bytes(20_000), True), 0)[:6000]
    conn.receive_data(start)  # the start of a message longer than the bound
    assert drain(conn) == []
    for _ in range(3):
        conn.receive_data(bytes(6000))  # never parsed: no event while a message is unfinished
    with pytest.raises(RTMPProtocolError, match="more than 10000"):
        drain(conn)


def test_reply_flood_is_bounded() -> None:
    client = Client()
    conn = new_connection(RTMPLimits(max_output=4000))
    conn.receive_data(handshake() + client.connect())
    drain(conn)
    conn.data_to_send()
    pings = client.control(4, b"\x00\x06\x00\x00\x00\x01") * 400
    conn.receive_data(pings)
    with pytest.raises(RTMPProtocolError, match="more than 4000 reply bytes pending"):
        drain(conn)


def test_bytes_received_and_clock() -> None:
    calls: list[int] = []
    client = Client()

    def clock() -> float:
        calls.append(1)
        return 99.0

    conn = RTMPServerConnection(clock=clock)
    data = handshake() + client.connect()
    conn.receive_data(data)
    assert conn.bytes_received == len(data) and calls == [1]
    drain(conn)
    assert calls == [1]  # the clock is read per receive_data(), never while parsing
