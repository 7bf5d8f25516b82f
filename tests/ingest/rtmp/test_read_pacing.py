"""Read pacing over real sockets: a busy server reads each publisher in batches, and loses nothing.

Media units parsed from one socket read share an ``arrival`` stamp, so the stamps count the reads.
"""

from __future__ import annotations

import asyncio
import socket

from ingest.hub import HubReader
from ingest.media import MediaUnit
from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher
from ingest.rtmp.connection import MSG_AUDIO
from ingest.rtmp.server import RTMPPublisherProtocol, RTMPServer, RTMPServerSettings

from .conftest import serving

PACED = RTMPServerSettings(read_pacing=0.05, read_pacing_publishers=1)
#: A 2 KB audio message every 10 ms: 200 KB/s, about 10 KB per 50 ms pacing interval.
BODY = flv.aac_audio_body(bytes(2048))


async def publish(server: RTMPServer, key: str = "good-key") -> RTMPPublisher:
    publisher = RTMPPublisher("127.0.0.1", server.port, "live", key)
    await publisher.connect()
    return publisher


def connection_of(server: RTMPServer, stream_id: str = "demo") -> RTMPPublisherProtocol:
    (conn,) = [c for c in server.connections if c.session and c.session.stream_id == stream_id]
    return conn


def kernel_mark(conn: RTMPPublisherProtocol) -> int:
    assert conn.transport is not None
    sock = conn.transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


async def send_for(publisher: RTMPPublisher, first_ms: int, count: int) -> int:
    """``count`` messages 10 ms apart; returns the next timestamp."""
    for n in range(count):
        publisher.send_media(MSG_AUDIO, first_ms + 10 * n, BODY)
        await asyncio.sleep(0.01)
    return first_ms + 10 * count


def drain(reader: HubReader) -> list[MediaUnit]:
    units = []
    while (unit := reader.get_nowait()) is not None:
        units.append(unit)
    return [u for u in units if not u.is_config]


async def wait_for(condition: object, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if callable(condition) and condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_busy_server_reads_each_publisher_in_batches(chunk_reader_cls: type) -> None:
    async with serving(chunk_reader_cls, PACED) as server:
        publisher = await publish(server)
        try:
            conn = connection_of(server)
            assert conn.session is not None
            reader = conn.session.hub.add_reader("test")
            ms = await send_for(publisher, 0, 100)  # 1 s: the pacer learns the rate
            drain(reader)
            await send_for(publisher, ms, 100)
            units = drain(reader)
            mark = server.pacer.mark_of(conn)
            assert mark > 1 and kernel_mark(conn) == mark
            reads = len({u.arrival for u in units})
            # Unpaced, each 10 ms message is a read of its own (about 100 here).
            assert len(units) >= 95 and len(units) / reads >= 2.0, (len(units), reads, mark)
        finally:
            await publisher.close()


async def test_a_publisher_that_goes_quiet_is_still_read_and_can_unpublish(
    chunk_reader_cls: type,
) -> None:
    async with serving(chunk_reader_cls, PACED) as server:
        publisher = await publish(server)
        conn = connection_of(server)
        assert conn.session is not None
        reader = conn.session.hub.add_reader("test")
        ms = await send_for(publisher, 0, 150)
        assert await wait_for(lambda: server.pacer.mark_of(conn) > 1)
        drain(reader)
        # One message, far below the mark, then silence: the timer's fallback lets it in.
        publisher.send_media(MSG_AUDIO, ms, flv.aac_audio_body(b"\x21\x10"))
        got: list[MediaUnit] = []
        assert await wait_for(
            lambda: bool(got.extend(drain(reader)) or (got and got[-1].dts == ms))
        )
        # What waited under the mark came in too, in order (the last frames before the silence).
        assert [u.dts for u in got] == list(range(got[0].dts, ms + 1, 10))
        assert server.pacer.mark_of(conn) == 1 == kernel_mark(conn)
        # The last deleteStream is read as well: the session ends cleanly, nothing is left.
        await publisher.close()
        assert await wait_for(lambda: not server.streams.sessions and not server.connections)
        assert server.pacer.mark_of(conn) == 1


async def test_pacing_needs_enough_publishers_and_stops_when_they_go(
    chunk_reader_cls: type,
) -> None:
    settings = RTMPServerSettings(read_pacing=0.05, read_pacing_publishers=2)
    async with serving(chunk_reader_cls, settings) as server:
        # ``serving`` maps only good-key to a stream; a second key is added for the second one.
        original = server.streams._authorize  # type: ignore[attr-defined]

        async def keys(key: str) -> str | None:
            return "other" if key == "other-key" else await original(key)

        server.streams._authorize = keys  # type: ignore[attr-defined]
        first = await publish(server)
        try:
            ms = await send_for(first, 0, 60)
            assert not server.pacer.active and server.pacer.mark_of(connection_of(server)) == 1
            second = await publish(server, "other-key")
            both = [first, second]
            for n in range(80):
                for publisher in both:
                    publisher.send_media(MSG_AUDIO, ms + 10 * n, BODY)
                await asyncio.sleep(0.01)
            ms += 800
            conn = connection_of(server)
            assert server.pacer.active and server.pacer.mark_of(conn) > 1
            await second.close()
            assert await wait_for(lambda: not server.pacer.active)
            assert server.pacer.mark_of(conn) == 1 == kernel_mark(conn)
            await send_for(first, ms, 10)  # still read as bytes come, and live
            assert not first.closed and len(server.streams.sessions) == 1
        finally:
            await first.close()
