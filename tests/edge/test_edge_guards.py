"""What the edge refuses on its own: bad paths and bad playback tokens never reach the origin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cdn_edge.server import EdgeConfig, EdgeServer
from packager import access
from packager.playlist import parse_media_playlist
from tests.e2e.conftest import requires_ffmpeg, stop_ffmpeg
from tests.edge.conftest import LoggedOrigin, logged_origin, publish, wait_live

SECRET = "edge-test-secret"
BAD_TARGETS = [
    "/hls/demo/../../etc/passwd",
    "/hls/demo/180p/../../../api/v1/streams",
    "/hls/demo/%2e%2e/%2e%2e/etc/passwd",
    "/hls/demo/180p/..%2f..%2fapi",
    "/hls/%2e%2e/180p/index.m3u8",
    "/hls/demo/180p%2f..%2f..%2fmaster.m3u8",
    "/hls/demo/180p/%00.m4s",
    "/hls//demo/master.m3u8",
    "/hls/demo/180p/sub/dir/0.m4s",
    "/hls/Demo/master.m3u8",
    "/api/v1/streams",
    "/etc/passwd",
    "/hls/demo/180p/index.m3u8?_HLS_msn=1e9",
    "/hls/demo/180p/index.m3u8?_HLS_msn=1&_HLS_skip=maybe",
]


async def raw_status(port: int, target: str) -> int:
    """Send ``target`` byte for byte (clients would normalise ``..`` away) and read the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def start_edge(origin: LoggedOrigin, **options: str) -> EdgeServer:
    edge = EdgeServer(EdgeConfig(origins=(origin.http,), port=0, **options))  # type: ignore[arg-type]
    await edge.start()
    return edge


@pytest.fixture
async def plain_origin(tmp_path: Path) -> AsyncIterator[LoggedOrigin]:
    async with logged_origin(tmp_path) as origin:
        yield origin


async def test_bad_paths_are_refused_without_touching_the_origin(
    plain_origin: LoggedOrigin,
) -> None:
    edge = await start_edge(plain_origin)
    try:
        for target in BAD_TARGETS:
            status = await raw_status(edge.port, target)
            assert 400 <= status < 500, (target, status)
        assert plain_origin.log.entries == []
        # A good path does go through (the stream is not live: the origin's 404 is passed on).
        assert await raw_status(edge.port, "/hls/demo/master.m3u8") == 404
        assert [a.key for a in plain_origin.log.entries] == ["/hls/demo/master.m3u8"]
        rejected = edge.metrics.rejected.labels("path")._value.get()
        assert rejected == len(BAD_TARGETS)
    finally:
        await edge.close()


@requires_ffmpeg
@pytest.mark.e2e
async def test_playback_tokens_are_checked_at_the_edge(tmp_path: Path) -> None:
    async with logged_origin(tmp_path, secret=SECRET) as origin:
        publisher = await publish(origin, 30)
        edge = await start_edge(origin, playback_secret=SECRET)
        try:
            now = int(time.time())
            good = access.mint(SECRET, "demo", now + 600)
            other = access.mint(SECRET, "demo", now + 900)
            expired = access.mint(SECRET, "demo", now - 5)
            wrong_stream = access.mint(SECRET, "other", now + 600)
            forged = f"{now + 600}.{'A' * 43}"
            wrong_secret = access.mint("not-the-secret", "demo", now + 600)
            await wait_live(origin.http, token=good)
            origin.log.entries.clear()
            async with aiohttp.ClientSession() as http:
                for token in (None, expired, wrong_stream, forged, wrong_secret, "garbage"):
                    suffix = f"?token={token}" if token else ""
                    for path in ("/hls/demo/master.m3u8", "/hls/demo/180p/index.m3u8"):
                        async with http.get(f"{edge.url}{path}{suffix}") as r:
                            assert r.status == 403, (path, token)
                            assert r.headers["Access-Control-Allow-Origin"] == "*"
                assert origin.log.entries == []  # none of them reached the origin

                async with http.get(f"{edge.url}/hls/demo/master.m3u8?token={good}") as r:
                    assert r.status == 200
                    assert f"180p/index.m3u8?token={good}" in await r.text()
                base = f"{edge.url}/hls/demo/180p"
                async with http.get(f"{base}/index.m3u8?token={good}") as r:
                    assert r.status == 200
                    mine = await r.text()
                async with http.get(f"{base}/index.m3u8?token={other}") as r:
                    theirs = await r.text()
                # Each viewer's playlist carries its own token; the edge's never leaks.
                assert f"?token={good}" in mine and f"?token={other}" not in mine
                assert f"?token={other}" in theirs and f"?token={good}" not in theirs
                part = parse_media_playlist(mine).parts[0][2]
                async with http.get(f"{base}/{part}") as r:
                    assert r.status == 200 and len(await r.read()) > 0
                    assert r.headers["Cache-Control"] == "public, max-age=86400, immutable"
                    assert int(r.headers["Age"]) >= 0
                    assert r.headers["Access-Control-Expose-Headers"] == "Age"
                async with http.get(f"{base}/{part.split('?')[0]}?token={forged}") as r:
                    assert r.status == 403
            keys = [a.key for a in origin.log.from_edge()]
            assert keys.count("/hls/demo/180p/index.m3u8") == 1  # one object for both viewers
            assert all(a.status == 200 for a in origin.log.from_edge())
        finally:
            await edge.close()
            await stop_ffmpeg(publisher)
