"""`POST /api/v1/edge-reports`: each edge's viewer counts are its row in the cluster's node table;
a stream's viewers are the sum over edges heard within 30 s, the same on every origin."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp

from tests.e2e.conftest import API_TOKEN
from tests.edge.conftest import logged_origin

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _silent_for(store: Path, edge_id: str, seconds: float) -> None:
    """Move an edge's last report back in time (what its silence would leave in the table)."""
    with sqlite3.connect(store) as db:
        db.execute(
            "UPDATE nodes SET heartbeat_at = heartbeat_at - ? WHERE node_id = ?", (seconds, edge_id)
        )


async def test_reports_are_summed_over_live_edges(tmp_path: Path) -> None:
    async with logged_origin(tmp_path) as origin, aiohttp.ClientSession() as http:
        url = f"{origin.http}/api/v1/edge-reports"
        store = tmp_path / "store.sqlite3"

        async def demo_viewers() -> int:
            async with http.get(f"{origin.http}/api/v1/streams/demo", headers=AUTH) as r:
                return int((await r.json())["viewers"])

        assert await demo_viewers() == 0
        for edge, n in (("a", 120), ("b", 30), ("a", 100)):  # a's second report replaces its first
            body = {"edge_id": edge, "viewers": {"demo": n, "other": 1}}
            async with http.post(url, json=body, headers=AUTH) as r:
                assert r.status == 204
        assert await demo_viewers() == 130
        _silent_for(store, "a", 20)
        async with http.post(url, json={"edge_id": "b", "viewers": {}}, headers=AUTH) as r:
            assert r.status == 204
        assert await demo_viewers() == 100
        _silent_for(store, "a", 15)  # edge a has been silent for 35 s: it no longer counts
        assert await demo_viewers() == 0

        # Edges are nodes of the cluster: listed, alive or not.
        async with http.get(f"{origin.http}/api/v1/nodes", headers=AUTH) as r:
            assert r.status == 200
            nodes = {n["node_id"]: n for n in (await r.json())["nodes"]}
        assert (nodes["a"]["role"], nodes["a"]["alive"]) == ("edge", False)
        assert (nodes["b"]["role"], nodes["b"]["alive"], nodes["b"]["viewers"]) == (
            "edge",
            True,
            {},
        )
        me = origin.server.registry.node_id
        assert nodes[me]["role"] == "origin" and nodes[me]["alive"]
        # An edge cannot take an origin's place in the table.
        async with http.post(url, json={"edge_id": me, "viewers": {}}, headers=AUTH) as r:
            assert r.status == 409
            assert (await r.json())["error"]["code"] == "conflict"

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
