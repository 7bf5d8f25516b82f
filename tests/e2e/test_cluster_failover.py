"""Origin failover with the show's tags kept: two ``shopcast serve`` origins on one PostgreSQL,
haproxy (TCP) in front of their RTMP ports, ffmpeg publishing through it, an edge, hls.js in
headless Chromium playing from the edge. The owning origin is SIGKILLed mid-show; ffmpeg is
restarted through haproxy (as OBS retries) and lands on the other origin, which takes the
stream's lease once the dead node's expires and continues the same playlists: the player keeps
playing, every acknowledged tag is listed with its original DATERANGE."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.browser import chromium
from benchmarks.harness.edge import edge_process, wait_live
from benchmarks.harness.origin import ffmpeg_publish_args, requires_ffmpeg
from benchmarks.harness.postgres import PostgresServer, requires_postgres
from benchmarks.harness.serve_env import free_port
from packager.playlist import parse_media_playlist, tag_attributes
from shopcast.web import HLS_JS

from .test_store_postgres import pg_env, serving_all

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None
)
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    requires_postgres,
    pytest.mark.skipif(HAPROXY is None, reason="Debian haproxy not installed"),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not vendored (make install)"),
]
TOKEN = "failover-test-token"
STREAM = "failover"
#: A node silent this long is dead and its leases expire (short: the test waits it out).
NODE_TIMEOUT = 2.0
#: Seconds of the show on the first origin, and watched after the failover.
BEFORE_KILL, AFTER_FAILOVER = 8.0, 12.0

#: Samples the player every 100 ms: the longest time its position stood still while playing.
STALL_PROBE = """
(() => {
  const s = (window.stall = { longest: 0, since: performance.now(), last: -1 });
  setInterval(() => {
    const v = document.getElementById("video"), now = performance.now();
    if (v.currentTime !== s.last) { s.last = v.currentTime; s.since = now; }
    else s.longest = Math.max(s.longest, now - s.since);
  }, 100);
})()
"""


@asynccontextmanager
async def haproxy(tmp: Path, rtmp_ports: list[int]) -> AsyncIterator[int]:
    """haproxy in TCP mode in front of the origins' RTMP ports, checked every 300 ms; ``first``
    balancing, so the first origin takes publishes while it is up. Yields its RTMP port."""
    assert HAPROXY is not None
    port = free_port()
    servers = "\n".join(
        f"    server origin{n} 127.0.0.1:{p} check inter 300ms fall 1 rise 2"
        for n, p in enumerate(rtmp_ports, 1)
    )
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
frontend rtmp
    bind 127.0.0.1:{port}
    default_backend origins
backend origins
    balance first
{servers}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        HAPROXY,
        "-f",
        str(cfg),
        "-db",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def api(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def media_playlists(http: aiohttp.ClientSession, base: str) -> dict[str, str]:
    """Rendition name → its media playlist text, on one origin."""
    async with http.get(f"{base}/hls/{STREAM}/master.m3u8") as r:
        assert r.status == 200, await r.text()
        uris = [ln for ln in (await r.text()).splitlines() if ln and not ln.startswith("#")]
    out = {}
    for uri in uris:
        async with http.get(f"{base}/hls/{STREAM}/{uri}") as r:
            assert r.status == 200, await r.text()
            out[uri.split("/")[0]] = await r.text()
    return out


def dateranges(text: str) -> dict[str, str]:
    """ID → the whole EXT-X-DATERANGE line."""
    return {
        tag_attributes(line)["ID"]: line
        for line in text.splitlines()
        if line.startswith("#EXT-X-DATERANGE:")
    }


async def serving_parts(http: aiohttp.ClientSession, base: str, timeout: float) -> bool:
    """Whether ``base`` itself (no redirect to another owner) lists parts of the show within
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{base}/hls/{STREAM}/master.m3u8", allow_redirects=False) as r:
                if r.status == 200:
                    uri = [ln for ln in (await r.text()).splitlines() if ln[:1] not in "#"][-1]
                    async with http.get(f"{base}/hls/{STREAM}/{uri}", allow_redirects=False) as p:
                        if p.status == 200 and "#EXT-X-PART:" in await p.text():
                            return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    return False


async def start_publisher(url: str) -> asyncio.subprocess.Process:
    args = ffmpeg_publish_args(url, seconds=120, realtime=True)
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def test_a_show_survives_the_loss_of_its_origin(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    envs = [
        pg_env(
            tmp_path / name,
            url,
            SHOPCAST_API_TOKENS=TOKEN,
            SHOPCAST_CLUSTER_NODE_ID=name,
            SHOPCAST_CLUSTER_NODE_TIMEOUT=str(NODE_TIMEOUT),
            # A second publisher is refused while the owner's lease lives: the show moves
            # only once the dead node's lease has expired (node_timeout), as it would for
            # an origin that dies, whatever the policy.
            SHOPCAST_INGEST_ON_DUPLICATE_PUBLISHER="reject",
        )
        for name in ("origin-a", "origin-b")
    ]
    first, second = (e.http for e in envs)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with AsyncExitStack() as stack:
        [(owner, _), _] = await stack.enter_async_context(serving_all(*envs))
        lb = await stack.enter_async_context(haproxy(tmp_path, [e.rtmp_port for e in envs]))
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=auth))
        status, created = await api(http, "POST", f"{first}/api/v1/streams", json={"id": STREAM})
        assert status == 201, created
        ingest = f"rtmp://127.0.0.1:{lb}/live/{created['stream_key']}"
        publisher = await start_publisher(ingest)
        stack.push_async_callback(lambda: stop(publisher))
        await wait_live(first, STREAM)  # haproxy's "first" origin took it

        edge = await stack.enter_async_context(
            edge_process([], "--cluster", url, "--node-timeout", str(NODE_TIMEOUT))
        )
        browser = await stack.enter_async_context(chromium())
        page = await browser.new_page()
        await page.goto(f"{edge}/demo/{STREAM}")
        await page.wait_for_function(
            "document.getElementById('video').currentTime > 0.5", timeout=30_000
        )
        await page.evaluate(STALL_PROBE)

        # Tags on the first origin: one of each kind, each still listed after the failover
        # (a pin until the next pin, a deal and a poll for ten minutes).
        bodies = [
            {"kind": "product", "product_id": "sku-1", "data": {"title": "Shoe"}},
            {"kind": "deal", "product_id": "sku-1", "duration": 600, "data": {"off": 20}},
            {
                "kind": "poll",
                "duration": 600,
                "data": {"question": "Size?", "options": ["S", "M", "L"]},
            },
        ]
        acked = []
        for body in bodies:
            status, tag = await api(
                http, "POST", f"{first}/api/v1/streams/{STREAM}/tags", json=body
            )
            assert status == 201, tag
            acked.append(tag["id"])
            await asyncio.sleep(1.0)
        await asyncio.sleep(max(0.0, BEFORE_KILL - len(bodies)))
        before = await media_playlists(http, first)
        for text in before.values():
            assert set(acked) <= set(dateranges(text))

        owner.kill()  # SIGKILL: no lease released, nothing flushed
        killed = time.monotonic()
        await stop(publisher)
        # The publisher retries through haproxy (OBS does) until an origin takes the show:
        # haproxy sends it to the live origin, which takes the lease once the dead node's
        # has expired.
        publisher = await start_publisher(ingest)
        while not await serving_parts(http, second, timeout=0.5):
            assert time.monotonic() - killed < 30, "no origin took the show over"
            if publisher.returncode is not None:  # refused or cut: retry, as OBS would
                publisher = await start_publisher(ingest)
        reconnect = time.monotonic() - killed
        status, state = await api(http, "GET", f"{second}/api/v1/streams/{STREAM}")
        assert status == 200 and state["origin"]["node_id"] == "origin-b", state

        watched_from = await page.evaluate("document.getElementById('video').currentTime")
        # The show's tags go on at the new owner (through the dead one's API they could not).
        body = {"kind": "product", "product_id": "sku-2", "data": {"title": "Bag"}}
        status, tag = await api(http, "POST", f"{second}/api/v1/streams/{STREAM}/tags", json=body)
        assert status == 201, tag
        await asyncio.sleep(AFTER_FAILOVER)
        watched_to = await page.evaluate("document.getElementById('video').currentTime")
        stall = await page.evaluate("window.stall.longest") / 1000
        errors = await page.evaluate("window.shopcast.errors")
        jumps = await page.evaluate("window.shopcast.liveJumps")
        after = await media_playlists(http, second)
        status, listed = await api(http, "GET", f"{second}/api/v1/streams/{STREAM}/tags")
        _, parts = await api(http, "GET", f"{second}/api/v1/streams/{STREAM}/recordings")

    print(f"reconnect {reconnect:.2f} s, longest stall {stall:.2f} s, live-edge jumps {jumps}")
    assert [e for e in errors if e["fatal"]] == []
    assert watched_to - watched_from >= AFTER_FAILOVER * 0.6, (watched_from, watched_to)
    # The player stood still no longer than the show was away (its buffer covers the rest).
    assert stall <= reconnect, (stall, reconnect)
    # Every acknowledged tag is listed by the new owner, with its DATERANGE as it was.
    assert status == 200 and {*acked, tag["id"]} <= {t["id"] for t in listed["tags"]}
    assert set(after) == set(before)
    # The recording: the dead owner's part stays as it left it (its crash recovery closes it
    # from its store), the new owner records the rest as a second part.
    assert [r["state"] for r in sorted(parts["recordings"], key=lambda r: r["started_at"])] == [
        "recording",
        "recording",
    ], parts
    for name, text in after.items():
        old, new = parse_media_playlist(before[name]), parse_media_playlist(text)
        # S 6.2.1: above every number the old owner listed or hinted (part URIs are new).
        assert old.hint is not None and new.media_sequence > old.hint[0]
        assert "#EXT-X-DISCONTINUITY\n" in text
        old_ranges, new_ranges = dateranges(before[name]), dateranges(text)
        show_id = next(iter(old_ranges))
        for range_id in [show_id, *acked]:
            assert new_ranges.get(range_id) == old_ranges[range_id], range_id
        assert tag["id"] in new_ranges
