"""A held-up event loop is no publisher drop. Under uvloop (what ``shopcast serve`` runs) a
turn of the loop runs its due timers before it polls sockets again, so after a stall inside
an I/O callback the gap check would find the media of the stalled time still unread."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import uvloop

from shopcast.server import ShopcastServer

from .conftest import Origin, make_config, requires_ffmpeg, stop_ffmpeg
from .test_continuity import api, publish, ready_show, until, watching

pytestmark = [pytest.mark.e2e, requires_ffmpeg]


def test_a_held_up_event_loop_is_no_drop(tmp_path: Path) -> None:
    """The loop held past gap_timeout inside an I/O callback (as a long callback, or threads
    starving the loop's core, do) while the publisher keeps sending: no drop, no slate."""

    async def scenario() -> None:
        server = ShopcastServer(make_config(tmp_path))
        await server.start()
        origin = Origin(server)
        publisher = await publish(origin)
        try:
            names = await ready_show(origin)
            async with watching(origin, names) as watches:
                await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
                gap = server.config.continuity.gap_timeout
                loop = asyncio.get_running_loop()
                held = loop.create_future()
                ours, theirs = socket.socketpair()

                def hold() -> None:
                    loop.remove_reader(ours)
                    time.sleep(gap * 1.5)
                    held.set_result(None)

                loop.add_reader(ours, hold)
                theirs.send(b"x")
                await held
                ours.close()
                theirs.close()
                parts = {name: len(w.parts) for name, w in watches.items()}
                await until(
                    lambda: all(len(w.parts) >= parts[n] + 3 for n, w in watches.items()),
                    10,
                    "parts after the stall",
                )
                assert all(w.discontinuity == 0 for w in watches.values())
                _, body = await api(origin, "GET", "/api/v1/streams/demo")
                assert body["state"] == "live" and body["active_input"] != "slate", body
        finally:
            await stop_ffmpeg(publisher)
            await server.close()

    uvloop.run(scenario())
