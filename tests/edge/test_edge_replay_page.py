"""The replay page through the edges: ``shopcast edge`` and deploy/nginx-edge.conf serve
``/replay/<recording_id>`` and its data, the data behind the recording's token when playback is
signed."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from packager import access
from tests.e2e.conftest import requires_ffmpeg
from tests.edge.conftest import logged_origin, nginx_edge, requires_nginx
from tests.edge.test_edge_guards import raw_status, start_edge
from tests.edge.test_edge_vod import recorded_show

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
SECRET = "replay-page-edge-secret"


async def test_shopcast_edge_serves_the_replay_page_with_tokens(tmp_path: Path) -> None:
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
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{edge.url}/replay/{rid}") as r:
                    assert r.status == 200
                    assert f'data-recording="{rid}"' in await r.text()
                origin.log.entries.clear()
                for token in refused:
                    params = {"token": token} if token else {}
                    async with http.get(f"{edge.url}/replay/{rid}/data.json", params=params) as r:
                        assert r.status == 403, token
                assert await raw_status(edge.port, f"/replay/{rid}/../../api/v1/streams") == 404
                assert origin.log.entries == []  # none of them reached the origin
                async with http.get(
                    f"{edge.url}/replay/{rid}/data.json", params={"token": good}
                ) as r:
                    assert r.status == 200, await r.text()
                    via_edge = await r.json()
                async with http.get(
                    f"{origin.http}/replay/{rid}/data.json", params={"token": good}
                ) as r:
                    assert await r.json() == via_edge
            assert via_edge["recording_id"] == rid and via_edge["stream_id"] == "demo"
        finally:
            await edge.close()


@requires_nginx
async def test_nginx_edge_serves_the_replay_page(tmp_path: Path) -> None:
    async with (
        logged_origin(tmp_path, reconnect_window=1.0) as origin,
        nginx_edge(origin.http) as edge,
    ):
        rid = await recorded_show(origin)
        port = int(edge.rsplit(":", 1)[1])
        assert await raw_status(port, f"/replay/{rid}/../../api/v1/streams") == 404
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{edge}/replay/{rid}") as r:
                assert r.status == 200
                assert f'data-recording="{rid}"' in await r.text()
            async with http.get(f"{edge}/replay/{rid}/data.json") as r:
                assert r.status == 200
                assert (await r.json())["recording_id"] == rid
