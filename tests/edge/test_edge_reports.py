"""`POST /api/v1/edge-reports`: edges' viewer counts, summed over edges heard within 30 s."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from shopcast.api import VIEWERS_KEY
from tests.e2e.conftest import API_TOKEN
from tests.edge.conftest import logged_origin

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_reports_are_summed_over_live_edges(tmp_path: Path) -> None:
    async with logged_origin(tmp_path) as origin, aiohttp.ClientSession() as http:
        viewers = origin.server.app[VIEWERS_KEY]
        now = [1000.0]
        viewers.clock = lambda: now[0]
        url = f"{origin.http}/api/v1/edge-reports"

        async def demo_viewers() -> int:
            async with http.get(f"{origin.http}/api/v1/streams/demo", headers=AUTH) as r:
                return int((await r.json())["viewers"])

        assert await demo_viewers() == 0
        for edge, n in (("a", 120), ("b", 30), ("a", 100)):  # a's second report replaces its first
            body = {"edge_id": edge, "viewers": {"demo": n, "other": 1}}
            async with http.post(url, json=body, headers=AUTH) as r:
                assert r.status == 204
        assert await demo_viewers() == 130
        now[0] += 20
        async with http.post(url, json={"edge_id": "b", "viewers": {}}, headers=AUTH) as r:
            assert r.status == 204
        assert await demo_viewers() == 100
        now[0] += 15  # edge a has been silent for 35 s: it no longer counts
        assert await demo_viewers() == 0

        async with http.post(url, json={"edge_id": "a", "viewers": {}}) as r:
            assert r.status == 401
        for bad in (
            {"edge_id": "a"},
            {"edge_id": "", "viewers": {}},
            {"edge_id": "a", "viewers": {"demo": -1}},
            {"edge_id": "a", "viewers": {"demo": True}},
            {"edge_id": "a", "viewers": {"demo": 1.5}},
            {"edge_id": "a", "viewers": [], "x": 1},
        ):
            async with http.post(url, json=bad, headers=AUTH) as r:
                assert r.status == 422, bad
                assert (await r.json())["error"]["code"] == "invalid"
