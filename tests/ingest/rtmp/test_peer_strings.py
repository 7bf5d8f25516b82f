"""Peer-chosen strings (app, tcUrl, flashVer, command and stream names) reach replies and logs
cut short: in the core under Hypothesis, and over real sockets to the asyncio server. Both run
on each chunk reader twin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.rtmp import connection, flv
from ingest.rtmp.client import RTMPPublisher
from ingest.rtmp.connection import MSG_VIDEO, RTMPServerConnection
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.events import NEED_DATA, ConnectionClosed, ConnectRequested, PublishRequested
from ingest.rtmp.limits import MAX_APP_NAME
from ingest.rtmp.server import RTMPServer
from ingest.shown import REASON_CHARS, SHOWN, cut, shown

from .rtmp_client import Client, Replies, handshake

BIG = 60_000  # what the issue saw echoed whole: a 60 KB app name
AVCC = bytes.fromhex("0164000dffe1001a6764000dacd943029e7f0110000003001000000303c0f14299600100")


def strings(value: Any) -> Iterator[str]:
    """Every string inside a decoded AMF0 value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings(v)


def test_cut_and_shown() -> None:
    assert cut("short") == "short" and shown("short") == "'short'"
    long = "é" * 1000
    assert len(cut(long)) == SHOWN and cut(long).endswith("…")
    assert len(cut(long, 5)) == 5
    assert shown("a\nb\x00" * 100).count("\n") == 0  # one log line, whatever the peer sent
    # Escapes count too (fuzz finding: repr of repr of backslashes made a 404-character reason).
    for peer in ("\x00" * 40, "\\" * 300, repr("\\" * 300), "\x00" * 47 + "é"):
        assert len(shown(peer)) <= SHOWN + 2, peer
        assert len(shown(peer, 200)) <= 202, peer


# -- the core, under Hypothesis ---------------------------------------------------------------

FIELDS = ("app", "tcUrl", "flashVer", "command", "FCPublish", "publish", "data")
peer_text = st.builds(
    lambda piece, times: (piece or "x") * times,
    st.text(max_size=6),
    st.integers(min_value=1, max_value=12_000),
)


def conversation(field: str, text: str, publish: bool = True) -> bytes:
    """A publisher's opening with ``text`` in ``field`` (up to createStream without ``publish``)."""
    c = Client()
    connect = {
        "app": c.connect(app=text),
        "tcUrl": c.connect(tc_url=text),
        "flashVer": c.connect(flashVer=text),
    }.get(field, c.connect())
    out = handshake() + connect
    if field == "command":
        out += c.command(text, 7.0, None)
    out += c.publish_preamble(text if field == "FCPublish" else "testkey")
    if not publish:
        return out
    out += c.publish(text if field == "publish" else "testkey")
    if field == "data":
        out += c.data(text, "x")
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), peer_text)
def test_replies_and_errors_quote_peer_strings_short(
    chunk_reader_cls: type, field: str, text: str
) -> None:
    with mock.patch.object(connection, "ChunkStreamReader", chunk_reader_cls):
        conn = RTMPServerConnection(clock=lambda: 0.0)
    replies = Replies()
    error = ""
    try:
        conn.receive_data(conversation(field, text))
        while (ev := conn.next_event()) is not NEED_DATA and not isinstance(ev, ConnectionClosed):
            if isinstance(ev, ConnectRequested):
                conn.accept_connect(ev)
            elif isinstance(ev, PublishRequested):  # as the server does with an unknown key
                conn.reject_publish(ev, description="unknown or invalid stream key")
    except RTMPProtocolError as exc:
        error = str(exc)
    assert len(error) <= REASON_CHARS
    for _, _, body in replies.read(conn.data_to_send()):
        for s in strings(body):
            assert len(s) <= REASON_CHARS, (field, s[:100])
    if field == "app" and len(text.strip("/")) > MAX_APP_NAME:
        # refused by name, or earlier by the AMF0 string bound (64 KB of UTF-8)
        by_name = f"connect refused: application name longer than {MAX_APP_NAME} characters"
        assert error == by_name or error.startswith("AMF0 long string of"), error


# -- the asyncio server, over real sockets ----------------------------------------------------


async def exchange(port: int, data: bytes, wait: float = 1.0) -> tuple[list[Any], bool]:
    """Send ``data`` on a fresh connection; (decoded replies, whether the server closed it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    replies, got, closed = Replies(), bytearray(), False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return [body for _, _, body in replies.read(bytes(got))], closed


@pytest.mark.parametrize(
    ("field", "closed"),
    [
        ("app", True),
        ("tcUrl", False),
        ("flashVer", False),
        ("command", False),
        ("FCPublish", False),
    ],
)
async def test_60_kb_strings_over_a_socket(
    server: RTMPServer, caplog: pytest.LogCaptureFixture, field: str, closed: bool
) -> None:
    good = RTMPPublisher("127.0.0.1", server.port, "live", "good-key")
    await good.connect()
    try:
        caplog.set_level(logging.DEBUG, logger="ingest")
        text = "Z" * BIG
        replies, was_closed = await exchange(server.port, conversation(field, text, publish=False))
        assert was_closed is closed
        answers = [s for body in replies for s in strings(body)]
        assert answers and all(len(s) <= REASON_CHARS for s in answers)
        assert not any("Z" * SHOWN in s for s in answers)
        lines = [r.getMessage() for r in caplog.records]
        assert lines and all(len(line) <= REASON_CHARS + 60 for line in lines), lines
        assert not any("Z" * SHOWN in line for line in lines)
        if field == "app":
            errors = [b[-1] for b in replies if b[0] == "_error"]
            assert errors[0]["code"] == "NetConnection.Connect.Rejected"
            assert errors[0]["description"] == (
                f"application name longer than {MAX_APP_NAME} characters"
            )
            assert any("disconnecting: protocol error: connect refused" in x for x in lines)
        if field == "command":
            errors = [b[-1] for b in replies if b[0] == "_error"]
            assert errors[0]["description"] == f"{cut(text)} is not supported"
        # The publisher beside them never noticed.
        assert not good.closed and "demo" in server.streams.sessions
        session = server.streams.sessions["demo"]
        good.send_media(MSG_VIDEO, 0, flv.avc_sequence_header_body(AVCC))
        good.send_media(MSG_VIDEO, 0, flv.avc_video_body(b"\x00\x00\x00\x02\x65\x88", True, 0))
        await good.drain()
        for _ in range(100):
            if session.stats.video_frames:
                break
            await asyncio.sleep(0.02)
        assert session.stats.video_frames == 1 and session.stats.video_codec == "h264"
    finally:
        await good.close()
