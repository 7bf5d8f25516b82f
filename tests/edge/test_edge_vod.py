"""Replays through the edges: ``shopcast edge`` and deploy/nginx-edge.conf serve ``/vod/`` too,
segments cached as immutable, playback tokens checked like on ``/hls/``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from packager import access
from tests.e2e.conftest import requires_ffmpeg, stop_ffmpeg
from tests.edge.conftest import LoggedOrigin, logged_origin, nginx_edge, publish, requires_nginx
from tests.edge.test_edge_guards import raw_status, start_edge

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
SECRET = "vod-edge-secret"
IMMUTABLE = "public, max-age=31536000, immutable"


async def recorded_show(origin: LoggedOrigin) -> str:
    """Publish a 4 s show and wait until its recording is ready; its id."""
    publisher = await publish(origin, 4)
    try:
        assert await asyncio.wait_for(publisher.wait(), 30) == 0
    finally:
        await stop_ffmpeg(publisher)
    deadline = time.monotonic() + 30
    while True:
        rows = await origin.server.store.list_recordings("demo")
        if rows and rows[-1].state == "ready":
            return rows[-1].id
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.2)


async def watch(http: aiohttp.ClientSession, base: str, rid: str, query: str = "") -> list[str]:
    """Fetch the replay like a player (master, every playlist, init, every segment); the
    media paths fetched."""
    fetched = []
    async with http.get(f"{base}/vod/{rid}/master.m3u8{query}") as r:
        assert r.status == 200, await r.text()
        variants = [ln.split("?")[0] for ln in (await r.text()).splitlines() if ln[:1] != "#"]
    for variant in filter(None, variants):
        rendition = variant.split("/")[0]
        async with http.get(f"{base}/vod/{rid}/{variant}{query}") as r:
            assert r.status == 200
            playlist = await r.text()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist and "#EXT-X-ENDLIST" in playlist
        names = ["init.mp4"] + [
            ln.split("?")[0] for ln in playlist.splitlines() if ln[:1] not in "#"
        ]
        for name in filter(None, names):
            path = f"/vod/{rid}/{rendition}/{name}"
            async with http.get(f"{base}{path}{query}") as r:
                assert r.status == 200 and len(await r.read()) > 0, path
                assert r.headers["Cache-Control"] == IMMUTABLE
                assert r.headers["Access-Control-Allow-Origin"] == "*"
            fetched.append(path)
    return fetched


async def test_shopcast_edge_serves_replays_with_tokens(tmp_path: Path) -> None:
    async with logged_origin(tmp_path, secret=SECRET, reconnect_window=1.0) as origin:
        rid = await recorded_show(origin)
        edge = await start_edge(origin, playback_secret=SECRET)
        try:
            now = int(time.time())
            good = access.mint(SECRET, rid, now + 600, scope="vod")
            refused = [
                None,
                access.mint(SECRET, "demo", now + 600),  # a live token is not a replay token
                access.mint(SECRET, rid, now - 5, scope="vod"),
                access.mint(SECRET, "A" * 22, now + 600, scope="vod"),
            ]
            origin.log.entries.clear()
            async with aiohttp.ClientSession() as http:
                for token in refused:
                    suffix = f"?token={token}" if token else ""
                    async with http.get(f"{edge.url}/vod/{rid}/master.m3u8{suffix}") as r:
                        assert r.status == 403, token
                for target in (f"/vod/{rid[:-1]}/master.m3u8", f"/vod/{rid}/../../api/v1"):
                    assert await raw_status(edge.port, target) == 404
                assert origin.log.entries == []  # none of them reached the origin
                # The origin checks replay tokens itself too.
                async with http.get(f"{origin.http}/vod/{rid}/master.m3u8") as r:
                    assert r.status == 403
                origin.log.entries.clear()
                first = await watch(http, edge.url, rid, f"?token={good}")
                second = await watch(http, edge.url, rid, f"?token={good}")
            assert first == second and len(first) >= 3
            counts = Counter(a.key for a in origin.log.from_edge())
            assert all(counts[p] == 1 for p in first), counts  # cached: one origin fetch each
        finally:
            await edge.close()


@requires_nginx
async def test_nginx_edge_serves_replays(tmp_path: Path) -> None:
    async with (
        logged_origin(tmp_path, reconnect_window=1.0) as origin,
        nginx_edge(origin.http) as edge,
    ):
        rid = await recorded_show(origin)
        port = int(edge.rsplit(":", 1)[1])
        assert await raw_status(port, f"/vod/{rid}/../../api/v1/streams") == 404
        origin.log.entries.clear()
        async with aiohttp.ClientSession() as http:
            first = await watch(http, edge, rid)
            second = await watch(http, edge, rid)
            async with http.get(f"{edge}{first[-1]}") as r:
                assert r.headers["X-Cache-Status"] == "HIT"
        assert first == second
        counts = Counter(a.key for a in origin.log.entries)
        assert all(counts[p] == 1 for p in first), counts
