"""A 201 means stored: ``shopcast serve`` killed with SIGKILL right after acknowledging tags still
lists every one of them after a restart on the same store."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, serve_env
from shopcast.config import ClusterSection, StoreSection
from shopcast.store import make_store

from .conftest import ffmpeg_publish_args, requires_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
TOKEN = "durability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def serve(
    tmp_path: Path, run: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, int]]:
    """``shopcast serve`` on fresh ports over ``tmp_path``'s store; yields once HTTP answers."""
    srv = serve_env(
        tmp_path,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_TRANSCODE_RUNGS="180p:200k",  # one small rung: cheap on a 2-core machine
    )
    env = srv.env
    log = (tmp_path / f"serve-{run}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST, "serve", "--config", "shopcast.toml", env=env, stdout=log, stderr=log
    )
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            deadline = time.monotonic() + 20
            while True:
                assert proc.returncode is None, (tmp_path / f"serve-{run}.log").read_text()
                try:
                    async with http.get(
                        f"http://127.0.0.1:{srv.http_port}/api/v1/streams/demo"
                    ) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "shopcast serve did not come up"
                await asyncio.sleep(0.1)
        yield proc, srv.rtmp_port, srv.http_port
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def test_acknowledged_tags_survive_sigkill(tmp_path: Path) -> None:
    store = make_store(StoreSection(path=str(tmp_path / "store.sqlite3")))
    await store.open()
    key = (await store.create_stream("demo")).stream_key
    await store.close()

    acknowledged: list[dict[str, Any]] = []
    async with serve(tmp_path, 1) as (proc, rtmp_port, http_port):
        args = ffmpeg_publish_args(
            f"rtmp://127.0.0.1:{rtmp_port}/live/{key}", seconds=30, realtime=True
        )
        publisher = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{http_port}/api/v1/streams/demo/tags"
        try:
            async with aiohttp.ClientSession(headers=AUTH) as http:
                deadline = time.monotonic() + 30
                first: dict[str, Any] = {}
                while not first:  # until the stream is live and has media out
                    body = {"kind": "product", "product_id": "sku-first", "data": {"n": 0}}
                    async with http.post(url, json=body) as r:
                        if r.status == 201:
                            first = await r.json()
                        else:
                            assert r.status == 409, await r.text()
                            assert time.monotonic() < deadline, await r.text()
                            await asyncio.sleep(0.1)
                acknowledged.append(first)

                # More tags in flight; SIGKILL as soon as the fourth 201 is in, without any
                # graceful shutdown, while others may be half way through.
                killed = False

                async def poster(worker: int) -> None:
                    nonlocal killed
                    for i in range(1000):
                        body = {"kind": "product", "product_id": f"sku-{worker}-{i}"}
                        async with http.post(url, json=body) as r:
                            if r.status != 201:
                                return
                            acknowledged.append(await r.json())
                        if len(acknowledged) >= 4 and not killed:
                            killed = True
                            proc.send_signal(signal.SIGKILL)

                results = await asyncio.gather(
                    *(poster(w) for w in range(4)), return_exceptions=True
                )
                for result in results:  # the server vanished: connection errors, nothing else
                    assert result is None or isinstance(result, aiohttp.ClientError), result
            assert await proc.wait() == -signal.SIGKILL
        finally:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
    assert len(acknowledged) >= 4

    async with (
        serve(tmp_path, 2) as (_, _, http_port),
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        async with http.get(f"http://127.0.0.1:{http_port}/api/v1/streams/demo/tags") as r:
            assert r.status == 200
            listed = {t["id"]: t for t in (await r.json())["tags"]}
        for tag in acknowledged:
            assert tag["id"] in listed, f"acknowledged tag {tag['id']} lost"
            stored = listed[tag["id"]]
            for name in ("pts", "program_date_time", "kind", "product_id", "data", "source"):
                assert stored[name] == tag[name], (name, stored, tag)
        assert listed[acknowledged[0]["id"]]["data"] == {"n": 0}
        # Offline after the restart: the timeline is readable, new tags are refused. Until the
        # killed process's lease expires (node_timeout) the stream still has that owner, which
        # cannot be reached: 503 owner_unreachable (nothing applied); then 409, offline.
        deadline = time.monotonic() + ClusterSection().node_timeout + 5
        while True:
            async with http.post(
                f"http://127.0.0.1:{http_port}/api/v1/streams/demo/tags",
                json={"kind": "product", "product_id": "late"},
            ) as r:
                answer = await r.json()
                if r.status != 503:
                    break
            assert answer["error"]["code"] == "owner_unreachable", answer
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.5)
        assert r.status == 409, answer
        async with http.get(f"http://127.0.0.1:{http_port}/api/v1/streams/demo/tags") as r:
            assert "late" not in {t["product_id"] for t in (await r.json())["tags"]}
