"""``/healthz`` and ``/readyz`` on the origin and the edge, as load balancers and kubelets use
them: liveness stays up while the database is away, readiness follows the store (origin) and the
origins (edge), and a node shutting down is not ready."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.edge import edge_process
from benchmarks.harness.origin import make_config
from benchmarks.harness.postgres import PostgresServer, requires_postgres
from shopcast.config import StoreSection
from shopcast.server import ShopcastServer

pytestmark = pytest.mark.e2e


async def probe(base: str, path: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.get(base + path) as r:
        return r.status, await r.json(), r.headers.get("Cache-Control", "")


async def until_status(
    base: str, path: str, status: int, timeout: float = 20, check: Any = lambda body: True
) -> Any:
    """Poll ``path`` until it answers ``status`` (and ``check`` holds for the body); the body."""
    body: Any = None
    for _ in range(int(timeout / 0.1)):
        got, body, _ = await probe(base, path)
        if got == status and check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{base}{path} never answered {status}: {body}")


@requires_postgres
async def test_origin_ready_follows_the_store_and_live_does_not(tmp_path: Path) -> None:
    pg = PostgresServer()
    pg.start()
    server = ShopcastServer(replace(make_config(tmp_path), store=StoreSection(url=pg.url())))
    try:
        await server.start()
        base = f"http://127.0.0.1:{server.http_port}"
        status, body, cache = await probe(base, "/readyz")
        assert (status, body) == (
            200,
            {"status": "ready", "checks": {"store": "ok", "node": "ok"}},
        )
        assert cache == "no-store"  # an edge or CDN in front must not keep a probe's answer
        assert await probe(base, "/healthz") == (200, {"status": "alive"}, "no-store")

        pg.stop()
        body = await until_status(base, "/readyz", 503)
        assert body["status"] == "not_ready"
        assert body["checks"]["store"].startswith("store unavailable:"), body
        # The node's heartbeat fails too (every third of node_timeout): no longer registered.
        body = await until_status(base, "/readyz", 503, check=lambda b: b["checks"]["node"] != "ok")
        assert "not registered" in body["checks"]["node"], body
        assert len(body["checks"]["store"]) <= 200
        # Alive all the same: a restart would end the shows it still plays from memory.
        assert (await probe(base, "/healthz"))[0] == 200

        pg.start()
        await until_status(base, "/readyz", 200)
    finally:
        await server.close()
        pg.close()


async def test_origin_shutting_down_is_not_ready(tmp_path: Path) -> None:
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    base = f"http://127.0.0.1:{server.http_port}"
    release = asyncio.Event()

    async def hold() -> None:  # the shutdown waits here, with the HTTP side still up
        await release.wait()

    server.before_close.append(hold)
    closing: asyncio.Future[None] | None = None
    try:
        assert (await probe(base, "/readyz"))[0] == 200
        closing = asyncio.ensure_future(server.close())
        body = await until_status(base, "/readyz", 503)
        assert body["checks"]["shutdown"] == "the node is shutting down", body
        assert (await probe(base, "/healthz"))[0] == 200
    finally:
        release.set()
        await (closing or server.close())


async def test_edge_ready_when_an_origin_answers(tmp_path: Path) -> None:
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    origin = f"http://127.0.0.1:{server.http_port}"
    closed = False
    try:
        async with edge_process([origin]) as edge:
            assert await probe(edge, "/healthz") == (200, {"status": "alive"}, "no-store")
            status, body, cache = await probe(edge, "/readyz")
            assert (status, body, cache) == (
                200,
                {"status": "ready", "checks": {"origin": "ok"}},
                "no-store",
            )
            await server.close()
            closed = True
            status, body, _ = await probe(edge, "/readyz")
            assert status == 503, body
            assert body["checks"]["origin"].startswith(f"no origin answers: {origin}/healthz")
            assert (await probe(edge, "/healthz"))[0] == 200
    finally:
        if not closed:
            await server.close()


@requires_postgres
async def test_cluster_edge_ready_when_a_live_origin_of_the_store_answers(tmp_path: Path) -> None:
    pg = PostgresServer()
    pg.start()
    config = make_config(tmp_path)
    server = ShopcastServer(
        replace(
            config,
            store=StoreSection(url=pg.url()),
            cluster=replace(config.cluster, node_timeout=1.5),
        )
    )
    closed = False
    try:
        await server.start()
        async with edge_process([], "--cluster", pg.url(), "--node-timeout", "1.5") as edge:
            body = await until_status(edge, "/readyz", 200)
            assert body == {"status": "ready", "checks": {"origin": "ok"}}
            await server.close()  # a clean stop leaves the node table
            closed = True
            body = await until_status(edge, "/readyz", 503)
            assert body["checks"]["origin"].startswith("no origin"), body
    finally:
        if not closed:
            await server.close()
        pg.close()
