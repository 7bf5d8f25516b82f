"""``deploy/haproxy.cfg`` as shipped, run by Debian's haproxy in front of two ``shopcast serve``
origins on one PostgreSQL (the third origin of the file points at a closed port: it must show as
down). ffmpeg publishes several shows through haproxy; they go live spread over both origins. One
origin is killed: haproxy's health check (the origin's ``/readyz``) takes it out, and a new
publish through haproxy goes live on the other one."""

from __future__ import annotations

import asyncio
import csv
import importlib
import io
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.origin import ffmpeg_publish_args, requires_ffmpeg
from benchmarks.harness.postgres import requires_postgres
from benchmarks.harness.serve_env import ServeEnv, free_port

# The PostgreSQL e2e tests' way of starting `shopcast serve` origins on one database.
_pg: Any = importlib.import_module("tests.e2e.test_store_postgres")
pg_env, serving_all = _pg.pg_env, _pg.serving_all

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if os.access(p, os.X_OK)), None
)
HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
requires_haproxy = pytest.mark.skipif(HAPROXY is None, reason="Debian haproxy not installed")
pytestmark = [pytest.mark.e2e, requires_ffmpeg, requires_postgres, requires_haproxy]
TOKEN = "haproxy-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_TIMEOUT = 2.0
SHOWS = 4
BACKENDS = ("origins_rtmp", "origins_http", "origins_whip")


class Balancer:
    """haproxy's listening addresses in the test."""

    def __init__(self) -> None:
        self.rtmp_port, self.http_port, self.stats_port = free_port(), free_port(), free_port()

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def servers(self, http: aiohttp.ClientSession, backend: str) -> dict[str, str]:
        """Server name → haproxy's state of it (``UP``, ``DOWN``, …) in ``backend`` (nothing
        while haproxy is starting)."""
        try:
            async with http.get(f"http://127.0.0.1:{self.stats_port}/stats;csv") as r:
                assert r.status == 200
                text = (await r.text()).removeprefix("# ")
        except aiohttp.ClientConnectionError:
            return {}
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }


@asynccontextmanager
async def haproxy(origins: list[ServeEnv], log: Path) -> AsyncIterator[Balancer]:
    """The shipped config with this test's addresses put in through its environment variables."""
    assert HAPROXY is not None
    lb = Balancer()
    env = dict(
        os.environ,
        RTMP_BIND=f"127.0.0.1:{lb.rtmp_port}",
        HTTP_BIND=f"127.0.0.1:{lb.http_port}",
        STATS_BIND=f"127.0.0.1:{lb.stats_port}",
    )
    ports = [(o.rtmp_port, o.http_port) for o in origins] + [(free_port(), free_port())]
    for n, (rtmp_port, http_port) in enumerate(ports, 1):
        env |= {
            f"ORIGIN{n}_HOST": "127.0.0.1",
            f"ORIGIN{n}_RTMP_PORT": str(rtmp_port),
            f"ORIGIN{n}_HTTP_PORT": str(http_port),
        }
    check = await asyncio.create_subprocess_exec(
        HAPROXY, "-c", "-q", "-f", str(HAPROXY_CFG), env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await check.communicate()
    assert check.returncode == 0, err.decode()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(HAPROXY_CFG), env=env, stdout=out, stderr=out
        )
    try:
        yield lb
        assert proc.returncode is None, log.read_text()[-2000:]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return result


async def served_by(http: aiohttp.ClientSession, origins: dict[str, str], stream: str) -> set[str]:
    """The origins (by name) that serve ``stream``'s playlist themselves, parts listed."""
    names = set()
    for name, base in origins.items():
        try:
            async with http.get(f"{base}/hls/{stream}/master.m3u8", allow_redirects=False) as r:
                if r.status != 200:
                    continue
                variant = next(ln for ln in (await r.text()).splitlines() if ln[:1] not in "#")
            async with http.get(f"{base}/hls/{stream}/{variant}", allow_redirects=False) as r:
                if r.status == 200 and "#EXT-X-PART:" in await r.text():
                    names.add(name)
        except aiohttp.ClientConnectionError:
            continue  # a stopped origin serves nothing
    return names


async def owner(http: aiohttp.ClientSession, base: str, stream: str) -> str | None:
    """The node id owning ``stream``, as the API at ``base`` reports it."""
    async with http.get(f"{base}/api/v1/streams/{stream}") as r:
        assert r.status == 200, await r.text()
        return ((await r.json()).get("origin") or {}).get("node_id")


async def publisher(url: str, seconds: float) -> asyncio.subprocess.Process:
    args = ffmpeg_publish_args(url, seconds=seconds, realtime=True)
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def test_haproxy_spreads_publishers_and_drops_a_dead_origin(
    tmp_path: Path, postgres_url: str
) -> None:
    envs = [
        pg_env(
            tmp_path / name,
            postgres_url,
            SHOPCAST_API_TOKENS=TOKEN,
            SHOPCAST_CLUSTER_NODE_ID=name,
            SHOPCAST_CLUSTER_NODE_TIMEOUT=str(NODE_TIMEOUT),
            SHOPCAST_RECORD_ENABLED="false",  # not the point here; the machine is shared
            SHOPCAST_SRT_ENABLED="false",
        )
        for name in ("origin1", "origin2")
    ]
    origins = {"origin1": envs[0].http, "origin2": envs[1].http}
    publishers: list[asyncio.subprocess.Process] = []
    async with (
        serving_all(*envs) as started,
        haproxy(envs, tmp_path / "haproxy.log") as lb,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        try:

            async def all_checked() -> bool:
                expected = {"origin1": "UP", "origin2": "UP", "origin3": "DOWN"}
                return [await lb.servers(http, b) for b in BACKENDS] == [expected] * 3

            await until("haproxy to check every origin", all_checked, 15)

            # The control API through haproxy's HTTP frontend (any origin answers).
            keys = {}
            for n in range(SHOWS):
                async with http.post(f"{lb.http}/api/v1/streams", json={"id": f"show{n}"}) as r:
                    assert r.status == 201, await r.text()
                    keys[f"show{n}"] = (await r.json())["stream_key"]
            for key in keys.values():
                publishers.append(await publisher(lb.rtmp_url(key), 60))
                await asyncio.sleep(0.3)  # one at a time: least-connections sees each one

            async def placed() -> dict[str, set[str]] | None:
                where = {s: await served_by(http, origins, s) for s in keys}
                return where if all(len(names) == 1 for names in where.values()) else None

            where = await until("every show live on one origin", placed, 40)
            per_origin = [sum(names == {o} for names in where.values()) for o in origins]
            assert per_origin == [SHOWS // 2, SHOWS // 2], where
            # The cluster agrees: each show's lease is held by the origin serving it; and
            # haproxy's HTTP side serves every show whichever origin it picks (a non-owner
            # redirects to the owner).
            for stream, names in where.items():
                assert {await owner(http, lb.http, stream)} == names
                redirected = 0
                for _ in range(2):  # round robin: one request each to the owner and the other
                    async with http.get(f"{lb.http}/hls/{stream}/master.m3u8") as r:
                        assert r.status == 200, await r.text()
                        assert "#EXT-X-STREAM-INF" in await r.text()
                        redirected += len(r.history)
                assert redirected == 1, stream

            # origin2 dies; haproxy's checks of its /readyz fail and take it out of both pools.
            proc2, _ = started[1]
            proc2.send_signal(signal.SIGKILL)
            await proc2.wait()

            async def origin2_down() -> bool:
                states = [await lb.servers(http, b) for b in BACKENDS]
                return all(s["origin2"] == "DOWN" and s["origin1"] == "UP" for s in states)

            await until("haproxy to take origin2 out", origin2_down, 10)

            # A new show, published through haproxy, goes live on the origin left.
            async with http.post(f"{lb.http}/api/v1/streams", json={"id": "late"}) as r:
                assert r.status == 201, await r.text()
                late_key = (await r.json())["stream_key"]
            publishers.append(await publisher(lb.rtmp_url(late_key), 30))

            async def late_live() -> bool:
                return await served_by(http, origins, "late") == {"origin1"}

            await until("the new show live on origin1", late_live, 30)
            assert await owner(http, envs[0].http, "late") == "origin1"
            # origin1's shows carried on throughout.
            for stream, names in where.items():
                if names == {"origin1"}:
                    assert await served_by(http, origins, stream) == {"origin1"}
        finally:
            for proc in publishers:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
