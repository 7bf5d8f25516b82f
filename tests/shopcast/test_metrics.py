"""Metrics: the live-state collector on hand-built state, listeners, HTTP middleware, dashboard."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from ingest.sessions import LiveStreams
from packager.live import LivePackage, PackagerConfig
from packager.origin import add_hls_routes
from packager.recorder import Recorder
from packager.stores.local import FileStore
from shopcast.metrics import ShopcastMetrics, add_metrics_route
from shopcast.pipeline import StreamPipeline
from shopcast.store import TagRecord
from tests.packager.conftest import Feeder
from tests.packager.media import encode_audio, encode_video
from transcode.stats import FaultLog, TranscodeStats

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "shopcast.json"
PROMTOOL = shutil.which("promtool")


class FakePublisher:
    protocol = "rtmp"
    peer = "127.0.0.1:50000"

    def kick(self, reason: str) -> None:
        pass


def video_unit(i: int, size: int = 1000) -> MediaUnit:
    """Frame ``i`` of a 30 fps stream arriving in real time from t = 100 s."""
    return MediaUnit(
        MediaKind.VIDEO,
        "h264",
        pts=i * 33,
        dts=i * 33,
        timebase=MILLISECONDS,
        keyframe=i == 0,
        payload=bytes(size),
        arrival=100.0 + i / 30,
    )


async def no_keys(key: str) -> str | None:
    """No key lookups here: the sessions are opened by stream id."""
    return None


def hand_built() -> tuple[ShopcastMetrics, dict[str, StreamPipeline]]:
    """Two streams in the store, "shop" live for 2 s with a slow hub reader, "idle" offline."""
    streams = LiveStreams(no_keys)
    session = streams.open("shop", FakePublisher())
    session.hub.add_reader("slow", maxsize=10)  # never read: everything past 10 units drops
    for i in range(61):
        session.write(video_unit(i))
    faults = FaultLog(logging.getLogger("test"), "[shop]")
    faults.record("corrupt_video", "bad slice")
    faults.record("corrupt_video", "bad slice")
    faults.record("missing_config", "no avcC")
    pipelines = {
        "shop": StreamPipeline(
            LivePackage("shop", PackagerConfig()),
            transcoder=SimpleNamespace(stats=TranscodeStats(faults)),  # type: ignore[arg-type]
        )
    }
    metrics = ShopcastMetrics()
    metrics.watch(lambda: ["idle", "shop"], streams, pipelines)
    return metrics, pipelines


def value(metrics: ShopcastMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_collector_reads_live_state() -> None:
    metrics, _ = hand_built()
    assert value(metrics, "shopcast_stream_publisher_connected", stream="shop") == 1
    assert value(metrics, "shopcast_stream_publisher_connected", stream="idle") == 0
    # 61 frames of 1000 bytes over 2 s of arrivals.
    assert value(metrics, "shopcast_ingest_bytes_per_second", stream="shop") == 30_500
    fps = value(metrics, "shopcast_ingest_frames_per_second", stream="shop")
    assert fps is not None and fps == pytest.approx(30, abs=0.5)
    assert value(metrics, "shopcast_ingest_bytes_total", stream="shop") == 61_000
    assert value(metrics, "shopcast_ingest_frames_total", stream="shop", kind="video") == 61
    assert value(metrics, "shopcast_ingest_frames_total", stream="shop", kind="audio") == 0
    assert value(metrics, "shopcast_hub_dropped_frames_total", stream="shop") == 51
    assert (
        value(metrics, "shopcast_transcode_faults_total", stream="shop", kind="corrupt_video") == 2
    )
    assert (
        value(metrics, "shopcast_transcode_faults_total", stream="shop", kind="missing_config") == 1
    )
    # Decoder errors are there from 0 on.
    assert (
        value(metrics, "shopcast_transcode_faults_total", stream="shop", kind="corrupt_audio") == 0
    )
    # Offline streams have no session figures, only the connected gauge.
    assert value(metrics, "shopcast_ingest_bytes_per_second", stream="idle") is None
    # CPU and memory of the process.
    assert (value(metrics, "process_resident_memory_bytes") or 0) > 0
    assert value(metrics, "process_cpu_seconds_total") is not None


def test_collector_without_transcoder_or_fps() -> None:
    streams = LiveStreams(no_keys)
    session = streams.open("a", FakePublisher())
    session.write(video_unit(0))  # one frame: no rate yet
    metrics = ShopcastMetrics()
    package = LivePackage("a", PackagerConfig())
    metrics.watch(lambda: [], streams, {"a": StreamPipeline(package)})
    assert value(metrics, "shopcast_stream_publisher_connected", stream="a") == 1
    assert value(metrics, "shopcast_ingest_bytes_per_second", stream="a") == 0
    assert value(metrics, "shopcast_ingest_frames_per_second", stream="a") is None
    text = generate_latest(metrics.registry).decode()
    assert "shopcast_transcode_faults_total{" not in text  # no transcoder (yet)


def test_registries_are_per_server() -> None:
    a, b = ShopcastMetrics(), ShopcastMetrics()
    a.tag_clicked("shop", "live")
    assert value(a, "shopcast_tag_clicks_total", stream="shop", source="live") == 1
    assert value(b, "shopcast_tag_clicks_total", stream="shop", source="live") is None


def test_tag_listener() -> None:
    metrics = ShopcastMetrics()
    record = TagRecord(
        id="t1",
        stream_id="shop",
        kind="product",
        product_id="p1",
        data={},
        duration=None,
        pts=0,
        program_date_time=0.0,
        source="cue",
        late=False,
        clicks=0,
        created_at=0.0,
    )
    metrics.tag_created(record)
    metrics.tag_created(record)
    metrics.tag_clicked("shop", "live")
    metrics.tag_clicked("shop", "replay")
    metrics.tag_clicked("shop", "replay")
    assert value(metrics, "shopcast_tags_created_total", stream="shop", source="cue") == 2
    assert value(metrics, "shopcast_tag_clicks_total", stream="shop", source="live") == 1
    assert value(metrics, "shopcast_tag_clicks_total", stream="shop", source="replay") == 2


@pytest.fixture(scope="module")
def media() -> dict:
    return {"180p": encode_video("180p", 4.5), "audio": encode_audio("audio", 4.5)}


def test_packager_reports_lag_and_parts(media) -> None:
    metrics = ShopcastMetrics()
    arrival = media["180p"][1][0].arrival
    package = LivePackage("shop", PackagerConfig(), clock=lambda: arrival + 0.25, listener=metrics)
    feed = Feeder(package, media)
    feed.finish()
    video, audio = len(media["180p"][1]), len(media["audio"][1])
    lag = "shopcast_encoder_lag_seconds"
    assert value(metrics, f"{lag}_count", stream="shop", rendition="180p") == video
    assert value(metrics, f"{lag}_count", stream="shop", rendition="audio") == audio
    assert value(metrics, f"{lag}_sum", stream="shop", rendition="180p") == pytest.approx(
        0.25 * video
    )
    assert value(metrics, f"{lag}_bucket", stream="shop", rendition="180p", le="0.1") == 0
    assert value(metrics, f"{lag}_bucket", stream="shop", rendition="180p", le="0.5") == video
    state = package.renditions["180p"].state
    parts = sum(len(s.parts) for s in state.segments)
    assert parts >= 13  # 4.5 s in 1/3 s parts
    assert value(metrics, "shopcast_parts_total", stream="shop", rendition="180p") == parts
    # 2 s GOPs: two full segments and the flushed remainder.
    assert value(metrics, "shopcast_segments_total", stream="shop", rendition="180p") == 3
    late = "shopcast_part_publish_lateness_seconds"
    assert value(metrics, f"{late}_count", stream="shop", rendition="180p") == parts
    assert value(metrics, f"{late}_sum", stream="shop", rendition="180p") == pytest.approx(
        0.25 * parts
    )
    # Parts belong to the video renditions; audio rides in them.
    assert value(metrics, "shopcast_parts_total", stream="shop", rendition="audio") is None
    # Released with the ended show: no series of it is left to export.
    metrics.forget_stream("shop")
    for name in (
        "shopcast_parts_total",
        "shopcast_segments_total",
        f"{lag}_count",
        f"{late}_count",
    ):
        for rendition in ("180p", "audio"):
            assert value(metrics, name, stream="shop", rendition=rendition) is None
    metrics.forget_stream("shop")  # idempotent


@pytest.fixture
async def http(media):
    metrics = ShopcastMetrics()
    package = LivePackage("shop", PackagerConfig(segment_duration=Fraction(1)))
    feed = Feeder(package, media)
    app = web.Application()
    add_hls_routes(app, lambda sid: package if sid == "shop" else None)

    async def item(request: web.Request) -> web.Response:
        if request.match_info["id"] == "boom":
            raise RuntimeError("handler failed")
        if request.match_info["id"] == "gone":
            raise web.HTTPGone()
        return web.Response(text="ok")

    app.router.add_route("*", "/items/{id}", item)
    add_metrics_route(app, metrics)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, feed, metrics
    await client.close()


def requests(metrics: ShopcastMetrics, route: str, status: str, method: str = "GET") -> float:
    labels = {"route": route, "method": method, "status": status}
    return metrics.registry.get_sample_value("shopcast_http_requests_total", labels) or 0


async def test_http_counted_by_route_template(http) -> None:
    client, feed, metrics = http
    feed.until(2)
    for path in ("/items/a", "/items/b", "/items/gone", "/items/boom", "/no/such/path"):
        await (await client.get(path)).read()
    await (await client.request("PROPFIND", "/items/a")).read()
    await (await client.get("/hls/shop/180p/index.m3u8")).read()
    await (await client.get("/hls/other/180p/index.m3u8")).read()
    assert requests(metrics, "/items/{id}", "200") == 2
    assert requests(metrics, "/items/{id}", "410") == 1
    assert requests(metrics, "/items/{id}", "500") == 1
    assert requests(metrics, "/items/{id}", "200", method="other") == 1
    assert requests(metrics, "unmatched", "404") == 1
    assert requests(metrics, "/hls/{stream}/{rendition}/index.m3u8", "200") == 1
    assert requests(metrics, "/hls/{stream}/{rendition}/index.m3u8", "404") == 1
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert "/items/a" not in text and "/no/such/path" not in text  # templates, never raw paths
    # Nothing blocked: plain reloads, a finished part, a missing stream.
    assert "shopcast_http_blocking_wait_seconds_count" not in text


async def test_blocking_wait_timed(http) -> None:
    client, feed, metrics = http
    feed.until(2)
    rendition = feed.package.renditions["180p"]
    msn, part = rendition.state.last_position or (0, 0)
    reload = client.get(f"/hls/shop/180p/index.m3u8?_HLS_msn={msn}&_HLS_part={part + 1}")
    nxt_msn, nxt_idx = rendition.state.next_part
    hinted = client.get(f"/hls/shop/180p/{nxt_msn}.{nxt_idx}.m4s")
    tasks = [asyncio.ensure_future(reload), asyncio.ensure_future(hinted)]
    await asyncio.sleep(0.3)
    assert not any(t.done() for t in tasks)
    feed.until(2.7)
    for resp in await asyncio.wait_for(asyncio.gather(*tasks), 3):
        assert resp.status == 200
        await resp.read()
    for kind in ("playlist", "part"):
        labels = {"kind": kind}
        reg = metrics.registry
        assert reg.get_sample_value("shopcast_http_blocking_wait_seconds_count", labels) == 1
        waited = reg.get_sample_value("shopcast_http_blocking_wait_seconds_sum", labels)
        assert waited is not None and 0.25 < waited < 3
    # An existing part is not a blocking request.
    await (await client.get(f"/hls/shop/180p/{nxt_msn}.{nxt_idx}.m4s")).read()
    labels = {"kind": "part"}
    assert (
        metrics.registry.get_sample_value("shopcast_http_blocking_wait_seconds_count", labels) == 1
    )


def populated() -> ShopcastMetrics:
    """Every metric with at least one series, as on a busy server."""
    metrics, _ = hand_built()
    metrics.packet("shop", "360p", 0.2)
    metrics.part("shop", "360p", 0.4, ends_segment=True)
    metrics.http_requests.labels("/metrics", "GET", "200").inc()
    metrics.blocking_wait.labels("playlist").observe(0.3)
    metrics.tags_created.labels("shop", "api").inc()
    metrics.tag_clicked("shop", "replay")
    recorder = Recorder(FileStore("never-written"))
    recorder.open("shop", 2)  # one recording in progress: a queue depth
    recorder.stats.bytes["shop"] += 1000
    recorder.stats.segments["shop"] += 1
    recorder.stats.failures["shop", "store"] += 1
    metrics.watch_recorder(recorder)
    return metrics


def exported(metrics: ShopcastMetrics) -> dict[str, set[str]]:
    """Sample name → label names, as a scrape shows them."""
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


METRIC = re.compile(r"\b(?:shopcast|process|python)_[a-z0-9_]+\b")


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), (panel["title"], target["expr"])
            exprs.append(target["expr"])
    for var in board["templating"]["list"]:
        exprs.append(var["definition"])
    return exprs


def check_dashboard(names: dict[str, set[str]]) -> None:
    """Every metric a panel queries is exported, with the labels the query uses."""
    board = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    target_labels = {"job", "instance"}  # added by Prometheus at scrape time
    for expr in dashboard_exprs():
        used = METRIC.findall(expr)
        for name in used:
            assert name in names, f"{name} (in {expr!r}) is not exported"
        available = set().union(*(names[n] for n in used)) | target_labels
        labels = set(re.findall(r"(\w+)\s*=~?", expr))
        for group in re.findall(r"by \(([^)]*)\)", expr):
            labels |= {g.strip() for g in group.split(",")}
        labels |= set(re.findall(r"label_values\([^,]*,\s*(\w+)\)", expr))
        assert labels <= available, f"{expr!r} uses labels {labels - available}"


def test_dashboard_queries_exported_metrics() -> None:
    check_dashboard(exported(populated()))
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for needed in (
        "shopcast_ingest_bytes_per_second",
        "shopcast_ingest_frames_per_second",
        "histogram_quantile(0.5, sum by (stream, rendition, le) "
        '(rate(shopcast_encoder_lag_seconds_bucket{job=~"$job", stream=~"$stream"}',
        "histogram_quantile(0.99, sum by (stream, rendition, le) "
        '(rate(shopcast_encoder_lag_seconds_bucket{job=~"$job", stream=~"$stream"}',
        "shopcast_part_publish_lateness_seconds_bucket",
        "sum by (status) (rate(shopcast_http_requests_total",
        "shopcast_http_blocking_wait_seconds_bucket",
        "shopcast_tags_created_total",
        "shopcast_tag_clicks_total",
        "shopcast_recording_bytes_total",
        "shopcast_recording_failures_total",
        "shopcast_recording_queue_depth",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needed in exprs, needed


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian prometheus; make test)")
def test_promtool_accepts_the_exposition() -> None:
    assert PROMTOOL is not None
    text = generate_latest(populated().registry)
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_packet_histogram_exports_what_a_prometheus_histogram_would() -> None:
    """The per-packet histogram (plain counts, built at scrape) against prometheus_client's own
    Histogram fed the same values: the same bucket, count and sum lines."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from shopcast.metrics import LAG_BUCKETS, PacketHistogram

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = PacketHistogram("x_lag_seconds", "lag", LAG_BUCKETS)
    ours.register(batched)
    reference = Histogram(
        "x_lag_seconds", "lag", ["stream", "rendition"], buckets=LAG_BUCKETS, registry=theirs
    )
    values = [0.0, 0.01, 0.0100001, 0.3, 0.5, 2.5, 10.0, 11.0, 0.07]
    for n, v in enumerate(values):
        rendition = "180p" if n % 3 else "audio"
        assert batched.observe("s", rendition, v) == (n in (0, 1))
        reference.labels("s", rendition).observe(v)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if "_created" not in line)

    assert lines(ours) == lines(theirs)
    batched.remove("s", "audio")
    assert 'rendition="audio"' not in generate_latest(ours).decode()
