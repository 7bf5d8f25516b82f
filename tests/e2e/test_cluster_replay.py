"""Replays in a cluster, all real processes: two ``shopcast serve`` origins (A, B) on one
PostgreSQL, each recording into its own file store; ffmpeg publishes a short show to B.

The recording's row names B, so A answers its ``/vod``, replay and poster URLs with a 307 to
B (same path and query), forwards the recording's API calls (status, clips) there, and an
edge in front of A alone follows the redirect and serves B's bytes. Once B has left the
cluster, A says why it cannot serve the recording (503) instead of a 404.
"""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from benchmarks.harness.edge import edge_process
from benchmarks.harness.postgres import requires_postgres
from benchmarks.harness.serve_env import ServeEnv

from .conftest import requires_ffmpeg
from .test_cluster_routing import get, stop, wait_live
from .test_replay import flv, publish, segments, wait_recording
from .test_store_postgres import pg_env, serving_all

pytestmark = [pytest.mark.e2e, requires_ffmpeg, requires_postgres]
TOKEN = "cluster-replay-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def origin_env(tmp_path: Path, url: str, name: str) -> ServeEnv:
    return pg_env(
        tmp_path / name,
        url,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_CLUSTER_NODE_ID=name,
        SHOPCAST_CLUSTER_NODE_TIMEOUT="2",
        SHOPCAST_PACKAGER_RECONNECT_WINDOW="1",  # the recording closes soon after the show
    )


async def direct(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    """The answer itself (a redirect is not followed: the edge must follow it)."""
    async with http.get(url, allow_redirects=False) as r:
        return r.status, await r.read()


async def test_a_recording_on_one_origin_replays_through_the_others_and_an_edge(
    tmp_path: Path, postgres_url: str
) -> None:
    show, _ = await flv(tmp_path, 6)
    async with AsyncExitStack() as stack:
        a, b = origin_env(tmp_path, postgres_url, "a"), origin_env(tmp_path, postgres_url, "b")
        [_, (proc_b, _)] = await stack.enter_async_context(serving_all(a, b))
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=AUTH))
        async with http.post(f"{a.http}/api/v1/streams/demo/key") as r:
            key = (await r.json())["stream_key"]
        publisher = await publish(show, b.rtmp_url(key))
        stack.push_async_callback(stop, publisher)
        await wait_live(http, b.http)
        await publisher.wait()
        rec = await wait_recording(http, a.http, ("ready", "failed"))  # the shared row
        assert rec["state"] == "ready", rec
        rid = rec["id"]
        assert (tmp_path / "b" / "recordings" / rid).is_dir()
        assert not (tmp_path / "a" / "recordings" / rid).exists()  # B's disk only

        # A redirects every public URL of the recording to B, path and query kept.
        for path in (
            f"/vod/{rid}/master.m3u8?x=1",
            f"/vod/{rid}/poster.jpg",
            f"/replay/{rid}",
            f"/replay/{rid}/data.json",
        ):
            async with http.get(a.http + path, allow_redirects=False) as r:
                assert r.status == 307, (path, r.status, await r.text())
                assert r.headers["Location"] == b.http + path, path
        master = await get(http, f"{b.http}/vod/{rid}/master.m3u8")
        assert master[0] == 200
        variant = next(ln for ln in master[1].decode().splitlines() if ln and ln[0] != "#")
        media = await get(http, f"{b.http}/vod/{rid}/{variant}")
        uri = segments(media[1].decode())[0][0]
        segment = f"/vod/{rid}/{variant.rsplit('/', 1)[0]}/{uri}"
        want = await get(http, b.http + segment)
        assert want[0] == 200 and want[1]
        # Followed (as players do): B's bytes, from A's URL.
        assert await get(http, f"{a.http}/vod/{rid}/master.m3u8") == master
        assert await get(http, a.http + segment) == want

        # An edge that knows only A serves the recording: it follows A's redirect to B.
        edge = await stack.enter_async_context(edge_process([a.http]))
        assert await direct(http, f"{edge}/vod/{rid}/master.m3u8") == master
        assert await direct(http, f"{edge}/vod/{rid}/{variant}") == media
        assert await direct(http, edge + segment) == want

        # The API on A answers from B: the recording's renditions (B's manifest), a clip cut
        # on B whose URL is B's.
        async with http.get(f"{a.http}/api/v1/recordings/{rid}") as r:
            described = await r.json()
        assert r.status == 200 and described["renditions"], described
        async with http.post(
            f"{a.http}/api/v1/recordings/{rid}/clips", json={"start": 0, "end": 2}
        ) as r:
            clip = await r.json()
        assert r.status == 201 and clip["url"].startswith(b.http + "/clips/"), clip
        status, body = await get(http, clip["url"])
        assert status == 200 and body[4:8] == b"ftyp"

        # B leaves the cluster: A cannot serve B's files and says why.
        proc_b.send_signal(signal.SIGTERM)  # a clean stop removes its node row
        await asyncio.wait_for(proc_b.wait(), 15)
        deadline = time.monotonic() + 5  # A remembers where B was for a second
        while True:
            async with http.get(f"{a.http}/vod/{rid}/master.m3u8", allow_redirects=False) as r:
                status, reason = r.status, await r.text()
            if status != 307 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert status == 503 and "node b" in reason and "not alive" in reason, reason
