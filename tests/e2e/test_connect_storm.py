"""A connect storm on a real origin: light RTMP publishers (no ffmpeg each) connecting at once
all reach ``NetStream.Publish.Start``; admissions run concurrently but at most
``ADMISSIONS_IN_FLIGHT`` at a time; an established publisher is read meanwhile; beyond
``[ingest] max_publishers`` publishers are refused at once, with the reason."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher, RTMPPublishError
from ingest.rtmp.connection import MSG_AUDIO
from ingest.sessions import ADMISSIONS_IN_FLIGHT, Publisher
from shopcast.server import ShopcastServer

from .conftest import make_config

pytestmark = pytest.mark.e2e

MAX_PUBLISHERS = 40
EXTRA = 6  # publishers beyond the limit in the same storm


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_storm_goes_live_bounded_and_the_rest_is_refused_at_once(tmp_path: Path) -> None:
    server = ShopcastServer(make_config(tmp_path, max_publishers=MAX_PUBLISHERS))
    await server.start()
    publishers: list[RTMPPublisher] = []
    try:
        keys = []
        for n in range(MAX_PUBLISHERS + EXTRA):
            keys.append((await server.store.create_stream(f"storm{n}")).stream_key)
        port = server.rtmp.port
        established = RTMPPublisher("127.0.0.1", port, "live", keys[0])
        publishers.append(established)
        await established.connect()

        # Admissions wait on a gate: whatever is refused is refused without waiting for them.
        gate = asyncio.Event()
        in_flight = peak = 0

        async def gated(stream_id: str, publisher: Publisher) -> str | None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await gate.wait()
            finally:
                in_flight -= 1
            return None

        server.streams.admission = gated
        storm = [RTMPPublisher("127.0.0.1", port, "live", key) for key in keys[1:]]
        publishers += storm
        tasks = [asyncio.create_task(p.connect(timeout=60)) for p in storm]
        await until(lambda: sum(t.done() for t in tasks) == EXTRA, 30, "the refusals")
        assert server.streams.admitting_now == MAX_PUBLISHERS - 1 and not gate.is_set()
        for task in (t for t in tasks if t.done()):
            exc = task.exception()
            assert isinstance(exc, RTMPPublishError), exc
            assert str(exc) == (
                "publish refused: NetStream.Publish.Rejected "
                f"the server is full ({MAX_PUBLISHERS} publishers)"
            )
        await until(lambda: peak == ADMISSIONS_IN_FLIGHT, 30, "concurrent admissions")

        # The established publisher is read while the storm is being admitted.
        session = server.streams.sessions["storm0"]
        for n in range(20):
            established.send_media(MSG_AUDIO, 20 * n, flv.aac_audio_body(b"\x21\x10"))
        await established.drain()
        await until(lambda: session.stats.audio_frames == 20, 10, "the established publisher")
        assert not gate.is_set() and peak == ADMISSIONS_IN_FLIGHT

        gate.set()
        admitted = [t for t in tasks if not t.done()]
        assert len(admitted) == MAX_PUBLISHERS - 1
        await asyncio.gather(*admitted)
        live = [p for p in publishers if p.statuses and p.statuses[-1].code.endswith("Start")]
        assert len(live) == MAX_PUBLISHERS == len(server.streams.sessions)
        assert peak == ADMISSIONS_IN_FLIGHT and server.streams.admitting_now == 0
    finally:
        for p in publishers:
            with contextlib.suppress(Exception):
                await p.close()
        await server.close()
