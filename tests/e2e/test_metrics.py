"""``GET /metrics`` after a real ffmpeg publish: live series with sane values, promtool-clean."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.shopcast.test_metrics import check_dashboard

from .conftest import API_TOKEN, Origin, ffmpeg_publish_args, requires_ffmpeg, run_ffmpeg

PROMTOOL = shutil.which("promtool")
pytestmark = [pytest.mark.e2e, requires_ffmpeg]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(http: aiohttp.ClientSession, origin: Origin) -> str:
    # No Authorization header: operators' Prometheus scrapes /metrics like the HLS routes.
    async with http.get(f"{origin.http}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return await resp.text()


async def promtool_check(text: str) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool missing (Debian prometheus; `make test` installs it)")
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    assert proc.returncode == 0, out.decode()


async def wait_for_parts(origin: Origin, stream_id: str, timeout: float = 15.0) -> None:
    async def parts() -> None:
        while True:
            package = origin.server.pipelines.package(stream_id)
            if package and any(r.state.last_position for r in package.renditions.values()):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(parts(), timeout)


async def test_metrics_after_a_real_publish(origin: Origin) -> None:
    publish = asyncio.ensure_future(
        run_ffmpeg(
            ffmpeg_publish_args(
                origin.rtmp_url(await origin.key()), seconds=5, size="360x640", realtime=True
            )
        )
    )
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        await wait_for_parts(origin, "demo")
        rendition = origin.server.pipelines.package("demo").renditions["360p"]  # type: ignore[union-attr]
        msn, part = rendition.state.last_position  # type: ignore[misc]
        base = f"{origin.http}/hls/demo/360p/index.m3u8"
        async with http.get(base) as resp:
            assert resp.status == 200
        async with http.get(f"{base}?_HLS_msn={msn}&_HLS_part={part + 1}") as resp:
            assert resp.status == 200  # held until the next part, then answered
        async with http.post(
            f"{origin.http}/api/v1/streams/demo/tags",
            json={"kind": "product", "product_id": "sku-1"},
            headers=auth,
        ) as resp:
            assert resp.status == 201, await resp.text()
            tag_id = (await resp.json())["id"]
        async with http.post(f"{origin.http}/beacon/demo/tags/{tag_id}/click") as resp:
            assert resp.status == 200
        async with http.post(
            f"{origin.http}/beacon/demo/tags/{tag_id}/click?source=replay"
        ) as resp:
            assert resp.status == 200
        async with http.post(f"{origin.http}/beacon/demo/tags/no-such-tag/click") as resp:
            assert resp.status == 404

        live_text = await scrape(http, origin)
        assert not publish.done(), "the publish ended before the live scrape"
        code, err = await publish
        assert code == 0, err
        await asyncio.sleep(0.2)  # the session ends as the connection closes
        after_text = await scrape(http, origin)

    live = parse(live_text)
    assert get(live, "shopcast_stream_publisher_connected", stream="demo") == 1
    assert (get(live, "shopcast_ingest_bytes_per_second", stream="demo") or 0) > 10_000
    assert get(live, "shopcast_ingest_frames_per_second", stream="demo") == pytest.approx(30, abs=2)
    assert (get(live, "shopcast_ingest_frames_total", stream="demo", kind="video") or 0) > 30
    assert (get(live, "shopcast_ingest_frames_total", stream="demo", kind="audio") or 0) > 30
    assert get(live, "shopcast_hub_dropped_frames_total", stream="demo") == 0
    assert get(live, "shopcast_transcode_faults_total", stream="demo", kind="corrupt_video") == 0
    for name in ("360p", "180p"):
        labels = {"stream": "demo", "rendition": name}
        assert (get(live, "shopcast_parts_total", **labels) or 0) > 0
        lag_count = get(live, "shopcast_encoder_lag_seconds_count", **labels) or 0
        assert lag_count > 30
        lag_sum = get(live, "shopcast_encoder_lag_seconds_sum", **labels) or 0
        assert 0 < lag_sum / lag_count < 2  # mean encoder lag: real time on small rungs
        assert (get(live, "shopcast_part_publish_lateness_seconds_count", **labels) or 0) > 0
    assert (
        get(live, "shopcast_encoder_lag_seconds_count", stream="demo", rendition="audio") or 0
    ) > 0
    playlist = "/hls/{stream}/{rendition}/index.m3u8"
    assert (
        get(live, "shopcast_http_requests_total", route=playlist, method="GET", status="200") == 2
    )
    click = "/beacon/{stream_id}/tags/{tag_id}/click"
    assert get(live, "shopcast_http_requests_total", route=click, method="POST", status="404") == 1
    assert get(live, "shopcast_http_blocking_wait_seconds_count", kind="playlist") == 1
    assert get(live, "shopcast_tags_created_total", stream="demo", source="api") == 1
    assert get(live, "shopcast_tag_clicks_total", stream="demo", source="live") == 1
    assert get(live, "shopcast_tag_clicks_total", stream="demo", source="replay") == 1
    assert (get(live, "process_resident_memory_bytes") or 0) > 0
    assert (get(live, "process_cpu_seconds_total") or 0) > 0
    # Label values stay bounded: routes are templates, no request path, query or tag id.
    routes = {v for (name, labels) in live for k, v in labels if k == "route"}
    assert playlist in routes and all("demo" not in r and "?" not in r for r in routes)
    assert not any(tag_id in v for (_, labels) in live for _, v in labels)

    after = parse(after_text)
    assert get(after, "shopcast_stream_publisher_connected", stream="demo") == 0
    assert get(after, "shopcast_ingest_bytes_per_second", stream="demo") is None
    assert (get(after, "shopcast_segments_total", stream="demo", rendition="360p") or 0) >= 2

    # The Grafana dashboard only queries what this server really exports.
    names: dict[str, set[str]] = {}
    for (name, labels), _ in live.items():
        names.setdefault(name, set()).update(k for k, _ in labels)
    check_dashboard(names)

    await promtool_check(live_text)
    await promtool_check(after_text)
