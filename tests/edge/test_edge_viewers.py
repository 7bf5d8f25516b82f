"""200 simulated LL-HLS viewers through one `shopcast edge` process while ffmpeg publishes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from benchmarks.harness.sim import SimViewer
from benchmarks.loadtest.stats import percentile
from tests.e2e.conftest import API_TOKEN, requires_ffmpeg, stop_ffmpeg
from tests.edge.conftest import edge_process, get_json, get_text, logged_origin, publish, wait_live

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
VIEWERS = 200
WATCH_SECONDS = 18.0


async def run_viewers(
    base: str, playlist: str, count: int, seconds: float, prefix: str = "viewer"
) -> list[SimViewer]:
    """``count`` viewers joining over ~1 s, each watching until ``seconds`` from now."""
    until = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        viewers = [SimViewer(http, base, playlist, f"{prefix}-{i}") for i in range(count)]

        async def watch(i: int, viewer: SimViewer) -> None:
            await asyncio.sleep(i / count)
            await viewer.run(until)

        await asyncio.gather(*(watch(i, v) for i, v in enumerate(viewers)))
    return viewers


def assert_complete_and_in_order(viewers: list[SimViewer], digests: dict[str, str], seconds: float):
    for v in viewers:
        assert v.errors == [], (v.user_agent, v.errors[:5])
        assert v.gaps() == [], (v.user_agent, v.gaps()[:5])
        # ~3 parts a second; joining takes up to a second and a target duration of slack.
        assert len(v.got) >= (seconds - 3) * 3, (v.user_agent, len(v.got))
        for part in v.got:
            assert digests.get(part.path) == part.sha, f"{v.user_agent}: {part.path} differs"


async def test_200_viewers_get_every_part_with_one_origin_request_per_object(
    tmp_path: Path,
) -> None:
    async with logged_origin(tmp_path) as origin:
        publisher = await publish(origin, 60)
        try:
            playlist = await wait_live(origin.http)
            async with edge_process(
                [origin.http], "--origin-token", API_TOKEN, "--edge-id", "edge-a"
            ) as edge:
                watching = asyncio.ensure_future(
                    run_viewers(edge, playlist, VIEWERS, WATCH_SECONDS)
                )
                await asyncio.sleep(WATCH_SECONDS - 4)
                # The edge reports distinct viewers (address + User-Agent) every few seconds.
                status = await get_json(
                    f"{origin.http}/api/v1/streams/demo", Authorization=f"Bearer {API_TOKEN}"
                )
                viewers = await watching
                metrics = await get_text(f"{edge}/metrics")
        finally:
            await stop_ffmpeg(publisher)
    assert status["viewers"] == VIEWERS
    assert_complete_and_in_order(viewers, origin.log.part_digests(), WATCH_SECONDS)
    # Collapsed blocking reloads reach every waiter when the origin answers: a waiter the edge
    # forgot would only learn of the part from its next reload, a part (~0.33 s) or more later.
    # How late the tail is under load is a number for benchmarks/test_bench_edge.py, not here.
    answered = origin.log.answered_at()
    late = sorted(t for v in viewers for t in v.reload_lateness(answered))
    assert len(late) > VIEWERS * WATCH_SECONDS
    assert percentile(late, 0.5) < 0.1, late[len(late) // 2 :][:10]
    counts = origin.log.counts()
    assert counts, "nothing reached the origin through the edge"
    once = {k: n for k, n in counts.items() if "_HLS_msn" in k or k.endswith((".m4s", ".mp4"))}
    assert len(once) > WATCH_SECONDS * 3
    assert set(once.values()) == {1}, {k: n for k, n in once.items() if n > 1}
    plain = [n for k, n in counts.items() if k.endswith("index.m3u8")]
    assert sum(plain) <= WATCH_SECONDS + 3  # plain playlists: once per max-age (1 s) at most
    assert "shopcast_edge_collapsed_total" in metrics
    assert 'shopcast_edge_viewers{stream="demo"} 200.0' in metrics
