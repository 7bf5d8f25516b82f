"""``shopcast serve`` origins on one PostgreSQL (started by the tests): a split brain cannot
happen (an origin paused past its lease is fenced out when it resumes), and a database restart
while live leaves the show playing and the node registered again."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from benchmarks.harness.postgres import PostgresServer, requires_postgres
from benchmarks.harness.serve_env import ServeEnv
from shopcast.api import FORWARDED_HEADER

from .conftest import ffmpeg_publish_args, requires_ffmpeg, start_ffmpeg, stop_ffmpeg
from .test_cluster import until
from .test_store_postgres import pg_env, serving, serving_all

pytestmark = [pytest.mark.e2e, requires_ffmpeg, requires_postgres]
TOKEN = "cluster-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_TIMEOUT = 2.0


def origin_env(tmp_path: Path, url: str, node_id: str) -> ServeEnv:
    return pg_env(
        tmp_path / node_id,
        url,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_CLUSTER_NODE_ID=node_id,
        SHOPCAST_CLUSTER_NODE_TIMEOUT=str(NODE_TIMEOUT),
    )


async def get(http: aiohttp.ClientSession, url: str, *extra: str) -> Any:
    """GET ``url`` as JSON; ``extra`` header names are sent too (e.g. to ask a node's own view)."""
    async with http.get(url, headers={**AUTH, **{name: "test" for name in extra}}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def last_part(http: aiohttp.ClientSession, base: str, stream: str) -> str | None:
    """The newest part of the stream's first rendition (None while there is none)."""
    async with http.get(f"{base}/hls/{stream}/master.m3u8") as r:
        if r.status != 200:
            return None
        variant = next(
            (ln for ln in (await r.text()).splitlines() if ln and not ln.startswith("#")), None
        )
    if variant is None:
        return None
    async with http.get(f"{base}/hls/{stream}/{variant}") as r:
        parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', await r.text())
    return parts[-1] if parts else None


async def test_an_origin_paused_past_its_lease_is_fenced_out(
    tmp_path: Path, postgres_url: str
) -> None:
    """SIGSTOP the owner past node_timeout, publish the stream to the other origin (it takes
    the lease at epoch 2), SIGCONT: the paused one drops its publisher and show; both say B."""
    a, b = origin_env(tmp_path, postgres_url, "a"), origin_env(tmp_path, postgres_url, "b")
    async with serving_all(a, b) as [(proc_a, _), _b], aiohttp.ClientSession() as http:
        key = (await get(http, f"{a.http}/api/v1/streams/demo/ingest"))["rtmp_url"].rsplit("/")[-1]

        async def state(srv: ServeEnv) -> Any:  # the node's own view, not the owner's answer
            return await get(http, f"{srv.http}/api/v1/streams/demo", FORWARDED_HEADER)

        async def owner(srv: ServeEnv, node: str, publisher: bool) -> bool:
            """Whether ``srv`` says the show is live on ``node``, and has its publisher itself."""
            st = await state(srv)
            owned = (st["origin"] or {}).get("node_id") == node and st["state"] == "live"
            return owned and (st["ingest"] is not None) == publisher

        first = await start_ffmpeg(ffmpeg_publish_args(a.rtmp_url(key), seconds=90, realtime=True))
        second = None
        try:
            await until("a to own demo", lambda: owner(a, "a", publisher=True), 30)
            proc_a.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(NODE_TIMEOUT + 1.0)  # a's lease expires in the database
                second = await start_ffmpeg(
                    ffmpeg_publish_args(b.rtmp_url(key), seconds=90, realtime=True)
                )
                await until("b to own demo", lambda: owner(b, "b", publisher=True), 30)
            finally:
                proc_a.send_signal(signal.SIGCONT)
            # a wakes up believing it owns demo; its renewal finds epoch 2: fenced out.
            await until("a to drop its show", lambda: owner(a, "b", publisher=False), 15)
            log = (tmp_path / "a" / "serve.log").read_text()
            assert "lease for demo lost to node b (epoch 2)" in log, log[-3000:]
            assert (await state(a))["last_error"] == "lease for demo lost to node b (epoch 2)"
            await asyncio.wait_for(first.wait(), 15)  # a disconnected its publisher
            # Only b holds a lease, and keeps it (a does not win it back).
            await asyncio.sleep(NODE_TIMEOUT)
            conn = await asyncpg.connect(postgres_url)
            try:
                rows = await conn.fetch(
                    "SELECT node_id, epoch FROM stream_leases WHERE expires_at > cluster_now()"
                )
            finally:
                await conn.close()
            assert [tuple(r) for r in rows] == [("b", 2)]
            for srv in (a, b):
                assert await owner(srv, "b", publisher=srv is b)
            nodes = await get(http, f"{a.http}/api/v1/nodes")
            assert {n["node_id"]: n["alive"] for n in nodes["nodes"]} == {"a": True, "b": True}
        finally:
            await stop_ffmpeg(first)
            if second is not None:
                await stop_ffmpeg(second)


async def test_database_restart_while_live(tmp_path: Path) -> None:
    """The show keeps playing while PostgreSQL restarts (down longer than node_timeout); the
    node registers again and owns its stream again."""
    pg = PostgresServer()
    pg.start()
    try:
        srv = origin_env(tmp_path, pg.url(), "a")
        async with serving(srv), aiohttp.ClientSession() as http:
            ingest = await get(http, f"{srv.http}/api/v1/streams/demo/ingest")
            assert ingest["node_id"] == "a"
            publisher = await start_ffmpeg(
                ffmpeg_publish_args(ingest["rtmp_url"], seconds=90, realtime=True)
            )
            try:

                async def playing() -> bool:
                    return await last_part(http, srv.http, "demo") is not None

                await until("the show to play", playing, 30)
                before = await get(http, f"{srv.http}/api/v1/nodes")
                pg.stop()
                first = await last_part(http, srv.http, "demo")
                await asyncio.sleep(NODE_TIMEOUT * 1.5)  # past the lease: no longer claimed
                assert await last_part(http, srv.http, "demo") not in (None, first)
                pg.start()

                async def registered_again() -> Any:
                    try:
                        nodes = await get(http, f"{srv.http}/api/v1/nodes")
                        st = await get(http, f"{srv.http}/api/v1/streams/demo")
                    except AssertionError:  # 503 until the pool reconnects
                        return None
                    [node] = nodes["nodes"]
                    beat = node["heartbeat_at"] > before["nodes"][0]["heartbeat_at"]
                    owned = (st["origin"] or {}).get("node_id") == "a"
                    return node["alive"] and beat and owned and st["state"] == "live"

                await until("the node registered again", registered_again, 30)
                first = await last_part(http, srv.http, "demo")
                await asyncio.sleep(1.0)
                assert await last_part(http, srv.http, "demo") not in (None, first)
                log = (tmp_path / "a" / "serve.log").read_text()
                assert "cluster: node a re-registered" in log, log[-3000:]
                assert "no longer claimed" in log
                assert "lease for demo lost" not in log  # nobody else took it: kept
            finally:
                await stop_ffmpeg(publisher)
    finally:
        pg.close()
