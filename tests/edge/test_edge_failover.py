"""Two origins carry the same stream (one ffmpeg, tee'd to both); the first one dies mid-show."""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from shopcast.server import ShopcastServer
from tests.e2e.conftest import ffmpeg_publish_args, requires_ffmpeg, start_ffmpeg, stop_ffmpeg
from tests.edge.conftest import edge_process, logged_origin, wait_live
from tests.edge.test_edge_viewers import run_viewers

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
VIEWERS = 20
WATCH_SECONDS = 16.0
KILL_AFTER = 6.0


async def kill_http(server: ShopcastServer) -> None:
    """What a crashed origin looks like to the edge: no listener, every connection reset.

    (``server.close()`` is graceful: it would finish held requests with 503s instead.)
    """
    runner = server._runner
    assert runner is not None and runner.server is not None
    for site in list(runner.sites):
        await site.stop()
    for handler in list(runner.server.connections):
        if handler.transport is not None:
            handler.transport.abort()


async def test_viewers_keep_getting_parts_when_the_first_origin_dies(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(logged_origin(tmp_path / "a"))
        second = await stack.enter_async_context(logged_origin(tmp_path / "b"))
        args = ffmpeg_publish_args(first.rtmp_url(await first.key()), seconds=60, realtime=True)
        # One encode to both origins; a dead one must not stop the other (onfail=ignore).
        urls = [o.rtmp_url(await o.key()) for o in (first, second)]
        outputs = "|".join(f"[f=flv:onfail=ignore]{url}" for url in urls)
        args[-3:] = ["-flags", "+global_header", "-f", "tee", outputs]
        publisher = await start_ffmpeg(args)
        stack.push_async_callback(stop_ffmpeg, publisher)
        playlist = await wait_live(first.http)
        await wait_live(second.http)
        edge = await stack.enter_async_context(edge_process([first.http, second.http]))
        watching = asyncio.ensure_future(run_viewers(edge, playlist, VIEWERS, WATCH_SECONDS))
        await asyncio.sleep(KILL_AFTER)
        killed_at = time.time()
        await kill_http(first.server)
        closed_at = time.time()
        viewers = await watching

    assert first.log.from_edge() and second.log.from_edge()
    # (Held handlers of the dead origin may still finish, into aborted connections.)
    assert any(a.at > closed_at for a in second.log.from_edge())
    assert closed_at - killed_at < 1
    for v in viewers:
        after = [p for p in v.got if p.at > killed_at]
        # Parts keep coming after the kill: a gap of a few seconds at most, then the live pace.
        assert len(after) >= (WATCH_SECONDS - KILL_AFTER - 4) * 3, (v.user_agent, len(after))
        arrivals = [p.at for p in v.got]
        longest = max(b - a for a, b in itertools.pairwise(arrivals))
        assert longest < 4.0, (v.user_agent, longest, v.errors)
        assert all((b.msn, b.index) > (a.msn, a.index) for a, b in itertools.pairwise(v.got))
