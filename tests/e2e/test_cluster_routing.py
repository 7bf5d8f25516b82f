"""Routing in a cluster, all real processes: three ``shopcast serve`` origins (A, B, C) on one
PostgreSQL, ffmpeg publishing a barcoded show (tests/e2e/barcode.py) to C, an edge with
``--cluster`` and an edge with ``--origin A``.

Both edges serve C's parts byte for byte; A redirects viewers to C; a tag POSTed to A is
stamped by C on the frame it names, on every rendition, listed on A and C, its webhook sent
once; then the publisher moves to B and both edges follow without the viewers reloading (a
short pause, never an ENDLIST); every origin sums both edges' viewers; a kick and an end sent
to A act on B; a rotated key is refused by the owner. A SIGKILLed owner makes calls forwarded
to it a 503 with the reason until its lease expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.edge import edge_process
from benchmarks.harness.postgres import requires_postgres
from benchmarks.harness.serve_env import ServeEnv
from benchmarks.harness.sim import SimViewer
from packager.playlist import parse_media_playlist

from . import barcode
from .conftest import (
    Receiver,
    ffmpeg_publish_args,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from .test_replay import decode, emsgs, publish, segments
from .test_store_postgres import pg_env, serving_all

pytestmark = [pytest.mark.e2e, requires_ffmpeg, requires_postgres]
TOKEN = "cluster-routing-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_TIMEOUT = 2.0
#: Seconds of barcoded show per publisher (the move happens in the middle of the second).
SHOW_SECONDS = 40
#: Longest pause of a viewer's parts across the move: ffmpeg restarting and reconnecting, B's
#: first GOP through the transcoder, the lease taken over (a second or two each, loaded).
MOVE_STALL = 8.0


@dataclass
class EndWatchingViewer(SimViewer):
    """A :class:`SimViewer` that also notes every playlist it got with an ENDLIST (a player
    would stop there: the show moved, it did not end)."""

    endlists: list[str] = field(default_factory=list)

    async def _get(self, url: str) -> tuple[int, bytes]:
        status, body = await super()._get(url)
        if b"#EXT-X-ENDLIST" in body:
            self.endlists.append(url)
        return status, body


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


def origin_env(tmp_path: Path, url: str, name: str, hook: str) -> ServeEnv:
    return pg_env(
        tmp_path / name,
        url,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_CLUSTER_NODE_ID=name,
        SHOPCAST_CLUSTER_NODE_TIMEOUT=str(NODE_TIMEOUT),
        SHOPCAST_RECORD_ENABLED="false",  # not the point here; the machine is shared
        SHOPCAST_HOOKS_WEBHOOK_URLS=hook,
        SHOPCAST_HOOKS_WEBHOOK_SECRET="cluster-hooks",
    )


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as r:
        return r.status, await r.read()


async def wait_live(http: aiohttp.ClientSession, base: str, timeout: float = 40) -> list[str]:
    """The rendition names once every media playlist of the stream has a few parts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await get(http, f"{base}/hls/demo/master.m3u8")
        if status == 200:
            names = [ln.split("/")[0] for ln in body.decode().splitlines() if ln and ln[0] != "#"]
            texts = [await get(http, f"{base}/hls/demo/{n}/index.m3u8") for n in names]
            if all(s == 200 and t.count(b"#EXT-X-PART:") >= 3 for s, t in texts):
                return names
        await asyncio.sleep(0.2)
    raise AssertionError(f"the show did not go live on {base}")


async def owner_of(http: aiohttp.ClientSession, base: str) -> Any:
    async with http.get(f"{base}/api/v1/streams/demo") as r:
        assert r.status == 200, await r.text()
        return (await r.json()).get("origin")


async def wait_owner(http: aiohttp.ClientSession, base: str, node: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ((await owner_of(http, base)) or {}).get("node_id") != node:
        assert time.monotonic() < deadline, await owner_of(http, base)
        await asyncio.sleep(0.2)


async def tag(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base}/api/v1/streams/demo/tags", json=body) as r:
        out = await r.json()
        assert r.status == 201, out
        return dict(out)


async def test_edges_and_any_origin_serve_tag_and_follow_a_show_across_origins(
    tmp_path: Path, postgres_url: str
) -> None:
    flv = tmp_path / "show.flv"
    await asyncio.to_thread(barcode.encode_flv, flv, SHOW_SECONDS)
    async with AsyncExitStack() as stack:
        hooks = await stack.enter_async_context(receiver())
        envs = [origin_env(tmp_path, postgres_url, n, hooks.url) for n in ("a", "b", "c")]
        await stack.enter_async_context(serving_all(*envs))
        a, b, c = envs
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=AUTH))
        async with http.post(f"{a.http}/api/v1/streams/demo/key") as r:
            key = (await r.json())["stream_key"]  # made on A, valid on every origin
        first = await publish(flv, c.rtmp_url(key))
        stack.push_async_callback(stop, first)
        renditions = await wait_live(http, c.http)
        await wait_owner(http, a.http, "c", 10)
        async with http.get(f"{a.http}/api/v1/streams/demo") as r:
            status = await r.json()  # C's own answer: its publisher and renditions
        assert status["state"] == "live" and status["ingest"]["protocol"] == "rtmp", status
        assert sorted(r["name"] for r in status["renditions"]) == sorted(renditions), status
        # The list on any origin, from one read of the lease table: C's show is live there.
        for base in (a.http, b.http, c.http):
            async with http.get(f"{base}/api/v1/streams") as r:
                listed = {s["id"]: s for s in (await r.json())["streams"]}
            assert listed["demo"]["state"] == "live", (base, listed["demo"])
            assert listed["demo"]["origin"]["node_id"] == "c", (base, listed["demo"])
        cluster_edge = await stack.enter_async_context(
            edge_process([], "--cluster", postgres_url, "--node-timeout", str(NODE_TIMEOUT))
        )
        origin_edge = await stack.enter_async_context(
            edge_process([a.http], "--origin-token", TOKEN)  # reports its viewers to A
        )

        # A plain CDN in front of A reaches C: a short-lived 307, path and query kept.
        blocking = f"/hls/demo/{renditions[0]}/index.m3u8?_HLS_msn=1&_HLS_part=0"
        async with http.get(f"{a.http}{blocking}", allow_redirects=False) as r:
            assert r.status == 307 and r.headers["Location"] == f"{c.http}{blocking}"
            assert r.headers["Cache-Control"] == "public, max-age=1"
        async with http.get(f"{c.http}/hls/nothing/master.m3u8", allow_redirects=False) as r:
            assert r.status == 404  # no owner: as on one machine

        # Both edges serve C's bytes: init and the newest complete parts of every rendition.
        for name in renditions:
            status, text = await get(http, f"{c.http}/hls/demo/{name}/index.m3u8")
            parts = [uri for *_, uri in parse_media_playlist(text.decode()).parts][-4:-1]
            for uri in ("init.mp4", *parts):
                path = f"/hls/demo/{name}/{uri}"
                status, want = await get(http, c.http + path)
                assert status == 200, path
                for edge in (cluster_edge, origin_edge):
                    assert await get(http, edge + path) == (200, want), (edge, path)

        # Tags POSTed to A, stamped by C: on the newest frame, and on the frame "at" names.
        newest = await tag(http, a.http, {"kind": "product", "product_id": "sku-now"})
        frame = round(newest["pts"] * barcode.FPS / 1000) + 2 * barcode.FPS
        at = await tag(
            http,
            a.http,
            {"kind": "product", "product_id": "sku-at", "at": barcode.pts_ms(frame)},
        )
        assert at["pts"] == barcode.pts_ms(frame) and not at["late"], at
        tagged = {newest["id"]: round(newest["pts"] * barcode.FPS / 1000), at["id"]: frame}
        for base in (a.http, c.http):
            async with http.get(f"{base}/api/v1/streams/demo/tags") as r:
                assert {t["id"] for t in (await r.json())["tags"]} == set(tagged)
        await asyncio.sleep(4)  # the tagged frames' segments are complete
        for name in renditions:
            status, text = await get(http, f"{cluster_edge}/hls/demo/{name}/index.m3u8")
            listed = segments(text.decode())
            init = (await get(http, f"{cluster_edge}/hls/demo/{name}/init.mp4"))[1]
            segs = [(await get(http, f"{cluster_edge}/hls/demo/{name}/{u}"))[1] for u, *_ in listed]
            decoded = await asyncio.to_thread(decode, init, segs, tmp_path / f"live-{name}")
            placed = {m["tag"]: m["presentation_time"] for s in segs for m in emsgs(s)}
            by_pts = dict(decoded)
            assert {t: by_pts.get(pts) for t, pts in placed.items()} == tagged, name

        # The move: the publisher leaves C and publishes to B; viewers on both edges go on.
        playlist = f"/hls/demo/{renditions[-1]}/index.m3u8"
        watchers = [
            EndWatchingViewer(http, edge, playlist, f"viewer-{i}")
            for i, edge in enumerate((cluster_edge, origin_edge))
        ]
        until = time.monotonic() + 16
        watching = asyncio.gather(*(w.run(until) for w in watchers))
        await asyncio.sleep(3)
        moved_at = time.time()
        await stop(first)
        second = await publish(flv, b.rtmp_url(key))
        stack.push_async_callback(stop, second)
        await wait_owner(http, a.http, "b", 10)
        await watching
        for w in watchers:
            after = [g for g in w.got if g.at > moved_at + NODE_TIMEOUT + 3]
            assert after, (w.base, w.errors, w.got[-3:])
            # Served by B now: the parts the viewer got last are B's.
            status, want = await get(http, b.http + after[-1].path)
            assert status == 200 and hashlib.sha256(want).hexdigest() == after[-1].sha
            # No reload: the parts just stop for the publisher's way to B, then go on.
            times = [g.at for g in w.got]
            stall = max(later - earlier for earlier, later in itertools.pairwise(times))
            print(f"{w.base}: stall {stall:.2f} s, errors {w.errors}")
            assert stall <= MOVE_STALL, (w.base, stall, w.errors)
            # What errors there are, are answers in that gap (never a broken connection).
            assert all(": HTTP " in e for e in w.errors), w.errors
            assert not w.endlists, (w.base, w.endlists)  # the show moved; it did not end

        # Both edges' viewers counted on any origin: the cluster edge's own node row, the other
        # edge's report to A.
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"{b.http}/api/v1/streams/demo") as r:
                viewers = (await r.json())["viewers"]
            if viewers == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert viewers == 2
        async with http.get(f"{c.http}/api/v1/nodes") as r:
            nodes = (await r.json())["nodes"]
        edges = {n["http_url"]: n for n in nodes if n["role"] == "edge"}
        assert edges[cluster_edge]["alive"] and edges[cluster_edge]["viewers"] == {"demo": 1}

        # Control through A acts on B: a rotated key is refused by the owner, the kick and
        # the end reach the show there.
        async with http.post(f"{a.http}/api/v1/streams/demo/key") as r:
            assert r.status == 200
        stale = await publish(flv, b.rtmp_url(key))
        assert await asyncio.wait_for(stale.wait(), 15) != 0
        async with http.delete(f"{a.http}/api/v1/streams/demo/publisher") as r:
            assert r.status == 204, await r.text()
        await asyncio.wait_for(second.wait(), 10)
        async with http.post(f"{a.http}/api/v1/streams/demo/end") as r:
            assert r.status == 200 and (await r.json())["state"] == "ended", await r.text()

        # Webhooks: each tag once (from the owner), one start per publish.
        deadline = time.monotonic() + 10
        while True:
            events = hooks.events()
            created = [e["data"]["id"] for e in events if e["type"] == "tag.created"]
            started = [e for e in events if e["type"] == "stream.started"]
            if (len(created) >= 2 and len(started) >= 2) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # a duplicate would come right behind
        events = hooks.events()
        assert sorted(e["data"]["id"] for e in events if e["type"] == "tag.created") == sorted(
            tagged
        )
        assert len([e for e in events if e["type"] == "stream.started"]) == 2


async def test_a_dead_owner_is_a_503_with_the_reason_until_its_lease_expires(
    tmp_path: Path, postgres_url: str
) -> None:
    flv = tmp_path / "show.flv"
    await asyncio.to_thread(barcode.encode_flv, flv, 20)
    async with AsyncExitStack() as stack:
        envs = [origin_env(tmp_path, postgres_url, n, "") for n in ("a", "c")]
        [_, (owner, _)] = await stack.enter_async_context(serving_all(*envs))
        a, c = envs
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=AUTH))
        async with http.post(f"{a.http}/api/v1/streams/demo/key") as r:
            key = (await r.json())["stream_key"]
        publisher = await publish(flv, c.rtmp_url(key))
        stack.push_async_callback(stop, publisher)
        await wait_live(http, c.http)
        await wait_owner(http, a.http, "c", 10)
        owner.kill()  # SIGKILL: no goodbye, the lease stays until it expires
        await owner.wait()
        async with http.get(f"{a.http}/api/v1/streams/demo") as r:
            status = await r.json()  # A's own answer while C cannot give one
        assert r.status == 200 and status["origin"]["node_id"] == "c", status
        body = {"kind": "product", "product_id": "sku-1"}
        async with http.post(f"{a.http}/api/v1/streams/demo/tags", json=body) as r:
            error = await r.json()
            assert r.status == 503 and r.headers["Retry-After"], error
            assert error["error"]["code"] == "owner_unreachable", error
        async with http.get(f"{a.http}/api/v1/streams/demo/tags") as r:
            assert (await r.json())["tags"] == []  # refused means not stored
        # Once the lease expired nobody owns the show: A answers itself, as on one machine.
        deadline = time.monotonic() + 3 * NODE_TIMEOUT
        while True:
            async with http.post(f"{a.http}/api/v1/streams/demo/tags", json=body) as r:
                if r.status == 409:
                    assert (await r.json())["error"]["code"] == "offline"
                    break
                assert r.status == 503, await r.text()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        async with http.get(f"{a.http}/hls/demo/master.m3u8", allow_redirects=False) as r:
            assert r.status == 404


async def test_a_forwarded_switch_gets_the_owners_answer_after_its_keyframe_wait(
    tmp_path: Path, postgres_url: str
) -> None:
    """The owner's switch waits up to ``switch_timeout`` for the input's keyframe, longer than
    an ordinary forwarded call may take: the caller still gets the owner's own answer."""
    flv = tmp_path / "show.flv"
    await asyncio.to_thread(barcode.encode_flv, flv, 30)
    switch_timeout = 7.0  # past FORWARD_TIMEOUT (5 s), short enough for a test
    async with AsyncExitStack() as stack:
        envs = [origin_env(tmp_path, postgres_url, n, "") for n in ("a", "c")]
        for env in envs:
            env.env["SHOPCAST_CONTINUITY_SWITCH_TIMEOUT"] = str(switch_timeout)
        await stack.enter_async_context(serving_all(*envs))
        a, c = envs
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=AUTH))
        async with http.post(f"{a.http}/api/v1/streams/demo/key") as r:
            key = (await r.json())["stream_key"]
        async with http.post(f"{a.http}/api/v1/streams/demo/inputs", json={"name": "closeup"}) as r:
            closeup_key = (await r.json())["stream_key"]
        main = await publish(flv, c.rtmp_url(key))
        stack.push_async_callback(stop, main)
        await wait_live(http, c.http)
        await wait_owner(http, a.http, "c", 10)
        # The close-up camera sends one IDR and no other: no switch can find its keyframe.
        args = ffmpeg_publish_args(c.rtmp_url(closeup_key), seconds=60, realtime=True)
        args[args.index("-g") + 1] = "100000"
        args[args.index("-g") : args.index("-g")] = ["-sc_threshold", "0"]
        closeup = await start_ffmpeg(args)
        stack.push_async_callback(stop_ffmpeg, closeup)
        deadline = time.monotonic() + 20
        while True:
            async with http.get(f"{a.http}/api/v1/streams/demo/inputs") as r:
                listed = {i["name"]: i for i in (await r.json())["inputs"]}
            if listed["closeup"]["publishing"]:
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # past its first IDR
        started = time.monotonic()
        async with http.post(
            f"{a.http}/api/v1/streams/demo/switch", json={"input": "closeup"}
        ) as r:
            answer = await r.json()
            waited = time.monotonic() - started
        # The owner's refusal, not the forwarding origin's 504 at FORWARD_TIMEOUT.
        assert r.status == 409 and answer["error"]["code"] == "no_keyframe", (answer, waited)
        assert waited >= switch_timeout - 0.5, waited
