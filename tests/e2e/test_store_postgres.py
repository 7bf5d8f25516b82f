"""``shopcast serve`` on PostgreSQL (started by the tests): everything survives a restart, two
origins on one empty database make the demo credentials once, a show stays live while the
database is away (API writes get 503 with the reason) and writes work again once it is back,
and an unreachable database at start is a clear error and a non-zero exit."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.postgres import PostgresServer, requires_postgres
from benchmarks.harness.serve_env import SHOPCAST, ServeEnv, free_port, read_until, serve_env

from .conftest import ffmpeg_publish_args, requires_ffmpeg, run_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg, requires_postgres]
RUNNING = r"shopcast is running"


def pg_env(tmp_path: Path, url: str, **overrides: str) -> ServeEnv:
    tmp_path.mkdir(parents=True, exist_ok=True)
    srv = serve_env(
        tmp_path,
        SHOPCAST_STORE_URL=url,
        SHOPCAST_TRANSCODE_RUNGS="180p:200k",  # small: the machine is shared
        **overrides,
    )
    del srv.env["SHOPCAST_STORE_PATH"]  # the URL, not a file, holds the store
    return srv


@asynccontextmanager
async def serving_all(
    *srvs: ServeEnv,
) -> AsyncIterator[list[tuple[asyncio.subprocess.Process, str]]]:
    """``shopcast serve`` once per environment, all started at once; yields each process with
    what it printed at start."""
    procs = []
    for srv in srvs:
        # The log goes to a file next to the store: an unread pipe would fill and stall it.
        with open(Path(srv.env["SHOPCAST_RECORD_PATH"]).parent / "serve.log", "ab") as log:
            procs.append(
                await asyncio.create_subprocess_exec(
                    SHOPCAST,
                    "serve",
                    env=srv.env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )
            )
    try:
        printed = await asyncio.gather(*(_started(proc) for proc in procs))
        yield list(zip(procs, printed, strict=True))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def serving(srv: ServeEnv) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    async with serving_all(srv) as [started]:
        yield started


async def _started(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    printed = await read_until(proc.stdout, RUNNING, timeout=40)
    assert RUNNING in printed, printed
    await asyncio.sleep(0.3)  # the rest of the block comes in the same write
    return printed + await _available(proc.stdout)


async def _available(stream: asyncio.StreamReader) -> str:
    seen = ""
    while True:
        try:
            line = await asyncio.wait_for(stream.readline(), 0.2)
        except TimeoutError:
            return seen
        if not line:
            return seen
        seen += line.decode()


def _token(printed: str) -> str | None:
    match = re.search(r"API token \(keep it secret\): (\S+)", printed)
    return match.group(1) if match else None


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def _publisher(url: str, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *ffmpeg_publish_args(url, seconds=seconds, realtime=True),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def _until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _tag(http: aiohttp.ClientSession, base: str, stream: str, sku: str) -> tuple[int, Any]:
    body = {"kind": "product", "product_id": sku}
    return await _json(http, "POST", f"{base}/api/v1/streams/{stream}/tags", json=body)


async def _live_tag(http: aiohttp.ClientSession, base: str, stream: str, sku: str) -> Any:
    """A tag accepted once the stream has media out (409 until then)."""

    async def attempt() -> Any:
        status, body = await _tag(http, base, stream, sku)
        assert status in (201, 409), body
        return body if status == 201 else None

    return await _until("a live tag", attempt)


async def _metrics(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def _last_part(http: aiohttp.ClientSession, base: str, stream: str) -> str | None:
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
        if r.status != 200:
            return None
        parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', await r.text())
    return parts[-1] if parts else None


async def test_everything_survives_a_restart(tmp_path: Path, postgres_url: str) -> None:
    srv = pg_env(tmp_path, postgres_url)
    async with serving(srv) as (_, printed):
        token = _token(printed)
        assert token and "demo stream created" in printed, printed
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            status, created = await _json(
                http, "POST", f"{srv.http}/api/v1/streams", json={"id": "shop"}
            )
            assert status == 201, created
            publisher = await _publisher(srv.rtmp_url(created["stream_key"]), 30)
            try:
                tag = await _live_tag(http, srv.http, "shop", "sku-restart")
            finally:
                await _stop(publisher)

    srv2 = pg_env(tmp_path, postgres_url)  # new ports, the same database
    async with serving(srv2) as (_, printed):
        assert _token(printed) is None and "demo stream" not in printed, printed
        async with aiohttp.ClientSession(headers=auth) as http:
            status, listed = await _json(http, "GET", f"{srv2.http}/api/v1/streams")
            assert status == 200, listed  # the stored token still opens the API
            assert [s["id"] for s in listed["streams"]] == ["demo", "shop"]
            status, tags = await _json(http, "GET", f"{srv2.http}/api/v1/streams/shop/tags")
            assert status == 200 and [t["id"] for t in tags["tags"]] == [tag["id"]]
            assert tags["tags"][0]["product_id"] == "sku-restart"
            # The key made before the restart still publishes.
            publisher = await _publisher(srv2.rtmp_url(created["stream_key"]), 10)
            try:

                async def live() -> bool:
                    _, st = await _json(http, "GET", f"{srv2.http}/api/v1/streams/shop")
                    return bool(st["state"] == "live")

                await _until("the old key to publish", live)
            finally:
                await _stop(publisher)


async def test_two_origins_on_one_empty_database_print_the_credentials_once(
    tmp_path: Path, postgres_url: str
) -> None:
    a = pg_env(tmp_path / "a", postgres_url)
    b = pg_env(tmp_path / "b", postgres_url)
    async with serving_all(a, b) as started:  # both start at the same moment
        both = "".join(printed for _, printed in started)
        assert both.count("API token (keep it secret)") == 1, both
        assert both.count("demo stream created") == 1, both
        token = _token(both)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            for srv in (a, b):
                status, listed = await _json(http, "GET", f"{srv.http}/api/v1/streams")
                assert status == 200 and [s["id"] for s in listed["streams"]] == ["demo"]


async def test_show_goes_on_while_the_database_is_away(tmp_path: Path) -> None:
    pg = PostgresServer()
    pg.start()
    try:
        srv = pg_env(tmp_path, pg.url(), SHOPCAST_API_TOKENS="pg-e2e-token")
        async with (
            serving(srv),
            aiohttp.ClientSession(headers={"Authorization": "Bearer pg-e2e-token"}) as http,
        ):
            _, demo = await _json(http, "POST", f"{srv.http}/api/v1/streams/demo/key")
            publisher = await _publisher(srv.rtmp_url(demo["stream_key"]), 90)
            try:
                before = await _live_tag(http, srv.http, "demo", "sku-before")
                pg.stop()
                # Playlists keep advancing from memory…
                first = await _last_part(http, srv.http, "demo")
                await asyncio.sleep(2.0)
                assert await _last_part(http, srv.http, "demo") not in (None, first)
                # …while a write that needs the database says why it cannot be done.
                status, refused = await _tag(http, srv.http, "demo", "sku-away")
                assert status == 503, refused
                assert refused["error"]["code"] == "database_unavailable"
                assert "unreachable" in refused["error"]["message"]
                # Metrics still answer, and say the store is away.
                assert "shopcast_store_available 0.0" in await _metrics(http, srv.http)
                # A new publisher is refused (its key cannot be checked), the show stays on.
                code, _ = await run_ffmpeg(
                    ffmpeg_publish_args(srv.rtmp_url("some-key"), seconds=5), timeout=30
                )
                assert code != 0
                first = await _last_part(http, srv.http, "demo")
                await asyncio.sleep(1.0)
                assert await _last_part(http, srv.http, "demo") not in (None, first)

                pg.start()

                async def accepted() -> Any:
                    status, body = await _tag(http, srv.http, "demo", "sku-after")
                    assert status in (201, 503), body
                    return body if status == 201 else None

                after = await _until("writes after the database is back", accepted, 20)
                assert "shopcast_store_available 1.0" in await _metrics(http, srv.http)
                log = (tmp_path / "serve.log").read_text()
                assert "publish refused: the key cannot be checked now" in log
                status, tags = await _json(http, "GET", f"{srv.http}/api/v1/streams/demo/tags")
                assert status == 200
                assert [t["id"] for t in tags["tags"]] == [before["id"], after["id"]]
            finally:
                await _stop(publisher)
    finally:
        pg.close()


async def test_unreachable_database_at_start_exits_non_zero(tmp_path: Path) -> None:
    url = f"postgresql://shopcast:hunter2@127.0.0.1:{free_port()}/shopcast"
    srv = pg_env(tmp_path, url)
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST,
        "serve",
        env=srv.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    message = err.decode()
    assert "shopcast: the store is unavailable: cannot use PostgreSQL at" in message, message
    assert "hunter2" not in message and "Traceback" not in message, message
    assert RUNNING not in out.decode()
