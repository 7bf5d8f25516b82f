"""The asyncio RTMP server's own bookkeeping over real sockets (each chunk reader twin)."""

from __future__ import annotations

import asyncio

from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher
from ingest.rtmp.connection import MSG_AUDIO
from ingest.rtmp.server import RTMPServerSettings

from .conftest import serving


def timers_held(obj: object) -> int:
    """Timer handles an object holds in its attributes (directly or in lists)."""
    values = list(vars(obj).values())
    values += [item for v in values if isinstance(v, list | tuple | set) for item in v]
    return sum(isinstance(v, asyncio.TimerHandle) for v in values)


async def test_a_long_lived_connection_holds_a_bounded_number_of_timers(
    chunk_reader_cls: type,
) -> None:
    # The idle check re-arms every idle/2 s: 30 re-arms within this test.
    settings = RTMPServerSettings(idle_timeout=0.1)
    async with serving(chunk_reader_cls, settings) as server:
        publisher = RTMPPublisher("127.0.0.1", server.port, "live", "good-key")
        await publisher.connect()
        try:
            (conn,) = server.connections
            for n in range(75):  # 1.5 s of audio frames, 20 ms apart: never idle
                publisher.send_media(MSG_AUDIO, 20 * n, flv.aac_audio_body(b"\x21\x10"))
                await asyncio.sleep(0.02)
            assert not publisher.closed and server.streams.sessions
            assert timers_held(conn) <= 1  # the idle check; the publish deadline went
        finally:
            await publisher.close()
        for _ in range(50):
            if not server.connections:
                break
            await asyncio.sleep(0.02)
        assert server.connections == set() and timers_held(conn) == 0
