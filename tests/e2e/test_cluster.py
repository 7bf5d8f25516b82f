"""Two origins as one cluster, with real ffmpeg publishers: one owner per live stream (its
lease), the takeover/reject policy across origins, placement on the origin with the most free
capacity, and the API of either origin naming the owner.

In-process origins on one SQLite file here (a cluster on one machine, the same code path as
PostgreSQL); ``test_cluster_postgres.py`` runs ``shopcast serve`` processes on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shopcast.api import FORWARDED_HEADER
from shopcast.config import ClusterSection
from shopcast.server import ShopcastServer

from .conftest import (
    API_TOKEN,
    Origin,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    run_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
NODE_TIMEOUT = 2.0


@asynccontextmanager
async def two_origins(tmp_path: Path, **ingest: object) -> AsyncIterator[tuple[Origin, Origin]]:
    """Origins ``a`` and ``b`` sharing one store file, each with its own recordings."""
    servers = []
    for name in ("a", "b"):
        config = make_config(tmp_path / name, **ingest)
        config = replace(
            config,
            store=replace(config.store, path=str(tmp_path / "cluster.sqlite3")),
            cluster=ClusterSection(node_id=name, capacity=2, node_timeout=NODE_TIMEOUT),
        )
        servers.append(ShopcastServer(config))
    for server in servers:
        await server.start()
    try:
        yield Origin(servers[0]), Origin(servers[1])
    finally:
        for server in servers:
            await server.close()


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def status(http: aiohttp.ClientSession, origin: Origin, stream: str = "demo") -> Any:
    """The origin's own view of ``stream`` (a forwarded request is answered, not sent on)."""
    headers = {**AUTH, FORWARDED_HEADER: "test"}
    async with http.get(f"{origin.http}/api/v1/streams/{stream}", headers=headers) as r:
        assert r.status == 200
        return await r.json()


async def test_takeover_on_another_origin_fences_the_first_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with two_origins(tmp_path) as (a, b), aiohttp.ClientSession() as http:
        key = await a.key()
        first = await start_ffmpeg(ffmpeg_publish_args(a.rtmp_url(key), seconds=60, realtime=True))
        try:

            async def owned_by(node: str, on: Origin) -> bool:
                st = await status(http, on)
                return st["state"] == "live" and (st["origin"] or {}).get("node_id") == node

            await until("a to own demo", lambda: owned_by("a", a))
            st = await status(http, b)  # b's own view names the owner (its API forwards to a)
            # Live (on a), with no publisher here.
            assert st["origin"] == {"node_id": "a", "http_url": a.http} and st["state"] == "live"
            assert st["ingest"] is None

            # Placement: a carries a transcoded show, b none: new streams publish to b.
            async def placed_on_b() -> Any:
                async with http.post(
                    f"{a.http}/api/v1/streams", json={"id": f"s{time.monotonic_ns()}"}, headers=AUTH
                ) as r:
                    assert r.status == 201
                    body = await r.json()
                return body if body["node_id"] == "b" else None

            placed = await until("a's load to count", placed_on_b, NODE_TIMEOUT * 2)
            assert placed["rtmp_url"] == f"{b.rtmp_url(placed['stream_key'])}"
            assert placed["whip_url"] == f"{b.http}/whip/{placed['id']}"
            async with http.get(f"{a.http}/api/v1/nodes", headers=AUTH) as r:
                nodes = {n["node_id"]: n for n in (await r.json())["nodes"]}
            assert nodes["a"]["load"] == 1.0 and nodes["b"]["load"] == 0.0
            assert nodes["a"]["capacity"] == 2.0 and nodes["a"]["alive"]

            second = await start_ffmpeg(
                ffmpeg_publish_args(b.rtmp_url(key), seconds=60, realtime=True)
            )
            try:
                await until("b to take demo over", lambda: owned_by("b", b))
                # a's next renewal finds itself fenced out: its publisher and show stop.
                await until("a to drop its show", lambda: _dropped(http, a))
                await asyncio.wait_for(first.wait(), 10)  # its publisher was disconnected
                reason = "lease for demo lost to node b (epoch 2)"
                assert reason in caplog.text
                st = await status(http, a)
                assert st["origin"]["node_id"] == "b" and st["last_error"] == reason
                assert a.server.pipelines.pipelines["demo"].package.ended
                assert not a.server.leases.holds("demo") and b.server.leases.holds("demo")
                lease = await a.server.store.lease_of("demo")
                assert lease is not None and (lease.node_id, lease.epoch) == ("b", 2)
                assert (await status(http, b))["state"] == "live"
                async with http.get(f"{a.http}/metrics") as r:
                    scraped = await r.text()
                assert "shopcast_cluster_leases_lost_total 1.0" in scraped
                assert "shopcast_cluster_leases 0.0" in scraped
                async with http.get(f"{b.http}/metrics") as r:
                    assert "shopcast_cluster_leases 1.0" in await r.text()
            finally:
                await stop_ffmpeg(second)
        finally:
            await stop_ffmpeg(first)


async def _dropped(http: aiohttp.ClientSession, origin: Origin) -> bool:
    st = await status(http, origin)
    return bool(st["ingest"] is None and st["active_input"] is None)


async def test_reject_refuses_a_stream_live_on_another_origin(tmp_path: Path) -> None:
    async with (
        two_origins(tmp_path, on_duplicate_publisher="reject") as (a, b),
        aiohttp.ClientSession() as http,
    ):
        key = await a.key()
        first = await start_ffmpeg(ffmpeg_publish_args(a.rtmp_url(key), seconds=60, realtime=True))
        try:

            async def live_on_a() -> bool:
                return bool((await status(http, a))["state"] == "live")

            await until("a live", live_on_a)
            code, err = await run_ffmpeg(ffmpeg_publish_args(b.rtmp_url(key), seconds=5), 30)
            assert code != 0, err
            st = await status(http, b)
            assert st["state"] == "live" and st["origin"]["node_id"] == "a"  # live on a
            assert st["ingest"] is None  # b took no publisher
            assert (await status(http, a))["state"] == "live"  # the first one is untouched
            lease = await b.server.store.lease_of("demo")
            assert lease is not None and (lease.node_id, lease.epoch) == ("a", 1)
        finally:
            await stop_ffmpeg(first)
        # The show ends on a (reconnect window): a releases the lease and b may take it.
        await a.server.pipelines.end_show("demo", "test over")

        async def released() -> bool:
            return await a.server.store.lease_of("demo") is None

        await until("the lease released", released, NODE_TIMEOUT * 3)
        assert (await status(http, b))["origin"] is None
