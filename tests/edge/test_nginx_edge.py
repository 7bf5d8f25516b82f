"""deploy/nginx-edge.conf in front of the real origin: Debian nginx, the same viewer simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.loadtest.stats import percentile
from tests.e2e.conftest import requires_ffmpeg, stop_ffmpeg
from tests.edge.conftest import logged_origin, nginx_edge, publish, requires_nginx, wait_live
from tests.edge.test_edge_guards import BAD_TARGETS, raw_status
from tests.edge.test_edge_viewers import assert_complete_and_in_order, run_viewers

pytestmark = [pytest.mark.e2e, requires_ffmpeg, requires_nginx]
VIEWERS = 100
WATCH_SECONDS = 15.0
NGINX_AGENT = "shopcast-nginx-edge"


async def test_nginx_proxy_cache_serves_ll_hls_viewers(tmp_path: Path) -> None:
    async with logged_origin(tmp_path) as origin, nginx_edge(origin.http) as edge:
        port = int(edge.rsplit(":", 1)[1])
        for target in BAD_TARGETS[:12]:
            status = await raw_status(port, target)
            assert 400 <= status < 500, (target, status)
            assert origin.log.entries == [], target  # bad paths never reach the origin
        publisher = await publish(origin, 60)
        try:
            playlist = await wait_live(origin.http)
            viewers = await run_viewers(edge, playlist, VIEWERS, WATCH_SECONDS)
        finally:
            await stop_ffmpeg(publisher)
    assert_complete_and_in_order(viewers, origin.log.part_digests(), WATCH_SECONDS)
    # Blocking reloads are released by the origin's answer plus at most nginx's 500 ms cache-lock
    # re-check, never by the 20 s lock timeout. The tail under load is a benchmark figure.
    answered = origin.log.answered_at()
    late = sorted(t for v in viewers for t in v.reload_lateness(answered))
    assert len(late) > VIEWERS * WATCH_SECONDS
    assert percentile(late, 0.5) < 0.6, late[len(late) // 2 :][:10]
    assert late[-1] < 5.0, late[-10:]
    counts = origin.log.counts(NGINX_AGENT)
    once = [n for k, n in counts.items() if "_HLS_msn" in k or k.endswith((".m4s", ".mp4"))]
    assert len(once) > WATCH_SECONDS * 3 and set(once) == {1}, counts.most_common(5)
