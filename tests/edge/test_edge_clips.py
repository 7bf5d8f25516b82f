"""Clips through the edges: ``shopcast edge`` and deploy/nginx-edge.conf serve
``/clips/<id>.mp4`` (public, immutable), fetch it from the origin once and answer byte ranges
from the cached whole object."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import av
import pytest

from benchmarks.harness.origin import API_TOKEN
from tests.e2e.conftest import requires_ffmpeg
from tests.edge.conftest import LoggedOrigin, logged_origin, nginx_edge, requires_nginx
from tests.edge.test_edge_guards import raw_status, start_edge
from tests.edge.test_edge_vod import IMMUTABLE, SECRET, recorded_show

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def cut_clip(http: aiohttp.ClientSession, origin: LoggedOrigin) -> tuple[str, bytes]:
    """A 2 s clip of a recorded show: its path, and its bytes as the origin serves them."""
    rid = await recorded_show(origin)
    url = f"{origin.http}/api/v1/recordings/{rid}/clips"
    async with http.post(url, json={"start": 0, "end": 2}, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        path = urlsplit((await r.json())["url"]).path
    async with http.get(f"{origin.http}{path}") as r:
        assert r.status == 200
        data = await r.read()
    with av.open(io.BytesIO(data)) as mp4:  # a playable MP4, not an error page
        assert mp4.streams.video and mp4.streams.video[0].frames > 0
    return path, data


async def check_through(http: aiohttp.ClientSession, base: str, path: str, data: bytes) -> None:
    """Whole, ranged and refused requests for the clip at ``base``."""
    for _ in range(2):
        async with http.get(f"{base}{path}") as r:
            assert r.status == 200 and await r.read() == data
            assert r.headers["Cache-Control"] == IMMUTABLE
            assert r.headers["Content-Type"] == "video/mp4"
            assert r.headers["Accept-Ranges"] == "bytes"
    size = len(data)
    for header, first, last in (
        ("bytes=0-99", 0, 99),
        (f"bytes={size - 500}-", size - 500, size - 1),
        ("bytes=-64", size - 64, size - 1),
        (f"bytes=100-{size + 1000}", 100, size - 1),
    ):
        async with http.get(f"{base}{path}", headers={"Range": header}) as r:
            assert r.status == 206, header
            assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
            assert await r.read() == data[first : last + 1]
    async with http.get(f"{base}{path}", headers={"Range": f"bytes={size}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{size}"
    async with http.get(f"{base}/clips/{'A' * 22}.mp4") as r:
        assert r.status == 404  # well-formed but unknown: the origin's answer


async def test_shopcast_edge_serves_clips_whole_and_in_ranges(tmp_path: Path) -> None:
    # With playback tokens on: clips stay public (whoever has the URL), as on the origin.
    async with logged_origin(tmp_path, secret=SECRET, reconnect_window=1.0) as origin:
        async with aiohttp.ClientSession() as http:
            path, data = await cut_clip(http, origin)
            edge = await start_edge(origin, playback_secret=SECRET)
            try:
                origin.log.entries.clear()
                for target in (f"{path[:-5]}.mp4", f"{path}/../../api/v1/streams"):
                    assert await raw_status(edge.port, target) == 404
                assert origin.log.entries == []  # refused at the edge
                await check_through(http, edge.url, path, data)
            finally:
                await edge.close()
        counts = Counter(a.key for a in origin.log.from_edge())
        assert counts[path] == 1, counts  # one origin fetch: the ranges came from the cache


@requires_nginx
async def test_nginx_edge_serves_clips_whole_and_in_ranges(tmp_path: Path) -> None:
    async with (
        logged_origin(tmp_path, reconnect_window=1.0) as origin,
        nginx_edge(origin.http) as edge,
        aiohttp.ClientSession() as http,
    ):
        path, data = await cut_clip(http, origin)
        port = int(edge.rsplit(":", 1)[1])
        origin.log.entries.clear()
        assert await raw_status(port, f"{path}/../../api/v1/streams") == 404
        await check_through(http, edge, path, data)
        async with http.get(f"{edge}{path}") as r:
            assert r.headers["X-Cache-Status"] == "HIT"
        counts = Counter(a.key for a in origin.log.entries)
        assert counts[path] == 1, counts
