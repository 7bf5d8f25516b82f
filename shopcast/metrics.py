"""Prometheus metrics of one origin (``GET /metrics``), in their own registry.

Figures that already exist as numbers (ingest stats, hub drops, transcoder faults) are read
from the live state at scrape time by :class:`LiveStateCollector`; timings are histograms
observed when they happen (the packager and the tag service report through listeners, the
HTTP middleware times requests). Label values are bounded: stream ids come from the store
(validated ``[a-z0-9_-]{1,64}``), never from a request path; renditions and fault kinds are
names from the code and the ladder config; HTTP routes are templates, not paths.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingest.sessions import LiveStreams
from packager.origin import LOOKUP_KEY
from packager.recorder import Recorder
from packager.stores import RecordingStore
from shopcast.pipeline import StreamPipeline
from shopcast.store import TagRecord

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Source frame in → packet out of the encoder; a real-time ladder sits well under a second.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
#: Last frame of a part in → part listed: a part target (1/3 s) plus the encoder lag.
LATENESS_BUCKETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)
#: Blocking reloads wait up to three target durations (S 6.2.5.2) before a 503.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Fault kinds that are decoder errors: exported from 0 on, so rate() and alerts see them start.
DECODER_FAULTS = ("corrupt_video", "corrupt_audio")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PLAYLIST_ROUTE = "/hls/{stream}/{rendition}/index.m3u8"
FILE_ROUTE = "/hls/{stream}/{rendition}/{file}"


class LiveStateCollector(Collector):
    """Per-stream figures read from the live state at scrape time (nothing kept in between)."""

    def __init__(
        self,
        stream_ids: Callable[[], Iterable[str]],
        streams: LiveStreams,
        pipelines: Mapping[str, StreamPipeline],
    ) -> None:
        self.stream_ids = stream_ids
        self.streams = streams
        self.pipelines = pipelines

    def collect(self) -> Iterator[Metric]:
        sessions = self.streams.sessions
        connected = GaugeMetricFamily(
            "shopcast_stream_publisher_connected",
            "1 while a publisher feeds the stream, 0 otherwise",
            labels=["stream"],
        )
        for stream_id in sorted(set(self.stream_ids()) | set(sessions)):
            connected.add_metric([stream_id], 1.0 if stream_id in sessions else 0.0)
        yield connected

        # Per publish session: these start over when a publisher (re)connects.
        rate = GaugeMetricFamily(
            "shopcast_ingest_bytes_per_second",  # base unit (promtool): the bitrate / 8
            "Ingest data rate over the last 5 s of arrivals",
            labels=["stream"],
        )
        fps = GaugeMetricFamily(
            "shopcast_ingest_frames_per_second",
            "Ingest video frame rate from the stream's timestamps (last 5 s)",
            labels=["stream"],
        )
        received = CounterMetricFamily(
            "shopcast_ingest_bytes",
            "Media payload bytes received from the publisher this session",
            labels=["stream"],
        )
        frames = CounterMetricFamily(
            "shopcast_ingest_frames",
            "Frames received from the publisher this session",
            labels=["stream", "kind"],
        )
        dropped = CounterMetricFamily(
            "shopcast_hub_dropped_frames",
            "Units the stream hub dropped because a reader's queue was full",
            labels=["stream"],
        )
        for stream_id, session in sorted(sessions.items()):
            st = session.stats
            rate.add_metric([stream_id], st.bitrate / 8)
            if st.fps is not None:
                fps.add_metric([stream_id], st.fps)
            received.add_metric([stream_id], st.bytes_received)
            frames.add_metric([stream_id, "video"], st.video_frames)
            frames.add_metric([stream_id, "audio"], st.audio_frames)
            dropped.add_metric([stream_id], session.hub.dropped)
        yield from (rate, fps, received, frames, dropped)

        faults = CounterMetricFamily(
            "shopcast_transcode_faults",
            "Transcoder faults by kind (corrupt_video/corrupt_audio are decoder errors), "
            "this session",
            labels=["stream", "kind"],
        )
        for stream_id, pipeline in sorted(self.pipelines.items()):
            if pipeline.transcoder is None:
                continue
            # A C-level dict copy: atomic against the worker threads that count.
            counts = dict.fromkeys(DECODER_FAULTS, 0) | pipeline.transcoder.stats.faults.counts
            for kind, count in sorted(counts.items()):
                faults.add_metric([stream_id, kind], count)
        yield faults

        on_slate = GaugeMetricFamily(
            "shopcast_stream_on_slate",
            "1 while the show plays its slate (the publisher dropped), 0 otherwise",
            labels=["stream"],
        )
        slate = CounterMetricFamily(
            "shopcast_slate_seconds",
            "Seconds the show spent on slate since it started",
            labels=["stream"],
        )
        for stream_id, pipeline in sorted(self.pipelines.items()):
            package = pipeline.package
            on_slate.add_metric([stream_id], 1.0 if package.active_input == "slate" else 0.0)
            slate.add_metric([stream_id], package.slate_seconds)
        yield from (on_slate, slate)


RECORDING_FAULT_KINDS = ("queue_full", "store")


class RecorderCollector(Collector):
    """Recording figures read from the recorder at scrape time."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        stats = self.recorder.stats
        written = CounterMetricFamily(
            "shopcast_recording_bytes", "Bytes written to the recordings store", labels=["stream"]
        )
        segments = CounterMetricFamily(
            "shopcast_recording_segments", "Segments recorded", labels=["stream"]
        )
        failures = CounterMetricFamily(
            "shopcast_recording_failures",
            "Recording faults: queue_full (a segment left out), store (the recording failed)",
            labels=["stream", "kind"],
        )
        depth = GaugeMetricFamily(
            "shopcast_recording_queue_depth",
            "Segments waiting for the recordings store",
            labels=["stream"],
        )
        for stream_id, count in sorted(stats.bytes.items()):
            written.add_metric([stream_id], count)
        for stream_id, count in sorted(stats.segments.items()):
            segments.add_metric([stream_id], count)
        # Every recorded stream shows both kinds, at 0 until a fault: an alert on
        # increase() then sees the first fault, and the dashboard has a series to draw.
        counts = {(s, k): 0 for s in stats.bytes for k in RECORDING_FAULT_KINDS}
        counts.update(stats.failures)
        for (stream_id, kind), count in sorted(counts.items()):
            failures.add_metric([stream_id, kind], count)
        for stream_id, queued in sorted(self.recorder.queue_depths()):
            depth.add_metric([stream_id], queued)
        yield from (written, segments, failures, depth)


class PacketHistogram(Collector):
    """A histogram by (stream, rendition) for a figure of every packet (the encoder lag): an
    observation is a bucket search and two list increments on the event loop, no lock and no
    child lookup; the series are built at scrape. (prometheus_client's locked ``observe`` was
    ≈ 4 % of the loop at 100 passthrough publishers.) Exported like a ``Histogram``."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(buckets)
        #: Per series: a count per bucket (the last one +Inf), then the sum.
        self._series: dict[tuple[str, str], list[float]] = {}

    def observe(self, stream: str, rendition: str, value: float) -> bool:
        """Count ``value``; True when it starts the series."""
        series = self._series.get((stream, rendition))
        new = series is None
        if series is None:
            series = self._series[stream, rendition] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        series[-1] += value
        return new

    def remove(self, stream: str, rendition: str) -> None:
        self._series.pop((stream, rendition), None)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=["stream", "rendition"]
        )
        bounds = [repr(float(b)) for b in self.bounds] + ["+Inf"]  # as prometheus_client
        for (stream, rendition), series in sorted(list(self._series.items())):
            counts = list(itertools.accumulate(series[:-1]))
            family.add_metric(
                [stream, rendition], list(zip(bounds, counts, strict=True)), series[-1]
            )
        yield family


class ShopcastMetrics:
    """The origin's metrics: listener of the packager and the tag service, HTTP middleware,
    and the ``/metrics`` handler. One per server (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        reg = self.registry
        self.encoder_lag = PacketHistogram(
            "shopcast_encoder_lag_seconds",
            "Ingest arrival of a source frame to its packet out of the encoder",
            LAG_BUCKETS,
        )
        reg.register(self.encoder_lag)
        self.part_lateness = Histogram(
            "shopcast_part_publish_lateness_seconds",
            "Ingest arrival of a part's last frame to the part listed in the playlist",
            ["stream", "rendition"],
            buckets=LATENESS_BUCKETS,
            registry=reg,
        )
        self.parts = Counter(
            "shopcast_parts", "Parts published", ["stream", "rendition"], registry=reg
        )
        self.segments = Counter(
            "shopcast_segments", "Segments completed", ["stream", "rendition"], registry=reg
        )
        self.http_requests = Counter(
            "shopcast_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=reg,
        )
        self.blocking_wait = Histogram(
            "shopcast_http_blocking_wait_seconds",
            "Time spent answering blocking playlist reloads (_HLS_msn) and hinted part requests",
            ["kind"],
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        self.tags_created = Counter(
            "shopcast_tags_created", "Tags created", ["stream", "source"], registry=reg
        )
        self.tag_clicks = Counter(
            "shopcast_tag_clicks",
            "Buy-button clicks on tag cards, by the page they came from (live or replay)",
            ["stream", "source"],
            registry=reg,
        )
        self.store_available = Gauge(
            "shopcast_store_available",
            "1 while the store (SQLite or PostgreSQL) answers, 0 while it cannot be reached",
            registry=reg,
        )
        self.store_available.set(1)
        self.cluster_load = Gauge(
            "shopcast_cluster_load",
            "Transcoding slots in use on this origin, as heartbeat to the cluster "
            "(a transcoded show 1, a passthrough-only show 0.25)",
            registry=reg,
        )
        self.cluster_leases = Gauge(
            "shopcast_cluster_leases",
            "Stream leases this origin holds and is sure of (renewed within node_timeout)",
            registry=reg,
        )
        self.cluster_leases_lost = Counter(
            "shopcast_cluster_leases_lost",
            "Streams this origin stopped because another origin took their lease (fenced out)",
            registry=reg,
        )
        #: Renditions with series, per stream: what forget_stream() removes.
        self._renditions: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
        #: Awaited before each scrape (e.g. the stream list is read from the store then).
        self.before_scrape: list[Callable[[], Awaitable[None]]] = []

    def watch(
        self,
        stream_ids: Callable[[], Iterable[str]],
        streams: LiveStreams,
        pipelines: Mapping[str, StreamPipeline],
    ) -> None:
        """Read these at every scrape (see :class:`LiveStateCollector`)."""
        self.registry.register(LiveStateCollector(stream_ids, streams, pipelines))

    def watch_recorder(self, recorder: Recorder) -> None:
        self.registry.register(RecorderCollector(recorder))

    # -- PackageListener ---------------------------------------------------------------
    def packet(self, stream: str, rendition: str, lag_seconds: float) -> None:
        if self.encoder_lag.observe(stream, rendition, lag_seconds):
            self._renditions[stream].add(rendition)

    def part(
        self, stream: str, rendition: str, lateness_seconds: float, ends_segment: bool
    ) -> None:
        self._renditions[stream].add(rendition)
        self.part_lateness.labels(stream, rendition).observe(lateness_seconds)
        self.parts.labels(stream, rendition).inc()
        segments = self.segments.labels(stream, rendition)  # 0 until the first one completes
        if ends_segment:
            segments.inc()

    def forget_stream(self, stream: str) -> None:
        """Drop an ended show's per-rendition series (a platform's ended streams would
        otherwise each keep theirs); a new show of the stream starts them from zero."""
        for rendition in self._renditions.pop(stream, ()):
            self.encoder_lag.remove(stream, rendition)
            for family in (self.part_lateness, self.parts, self.segments):
                with contextlib.suppress(KeyError):
                    family.remove(stream, rendition)

    # -- TagListener -------------------------------------------------------------------
    def tag_created(self, record: TagRecord) -> None:
        self.tags_created.labels(record.stream_id, record.source).inc()

    def tag_clicked(self, stream_id: str, source: str) -> None:
        self.tag_clicks.labels(stream_id, source).inc()

    def watch_store(self, store: RecordingStore) -> None:
        """Read the recordings store's health at every scrape (:class:`RecordingStoreCollector`)."""
        self.registry.register(RecordingStoreCollector(store))

    # -- HTTP --------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count every request by route template and status; time the blocking ones."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        blocking = _blocking_kind(request, route)
        start = time.perf_counter()
        status = "500"
        try:
            response = await handler(request)
            status = str(response.status)
            return response
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        except asyncio.CancelledError:
            status = "499"  # the client went away first (nginx's code for it)
            raise
        finally:
            self.http_requests.labels(route, method, status).inc()
            if blocking is not None:
                self.blocking_wait.labels(blocking).observe(time.perf_counter() - start)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text format."""
        for refresh in self.before_scrape:
            await refresh()
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _blocking_kind(request: web.Request, route: str) -> str | None:
    """Which kind of request the origin will hold ("playlist", "part"), by its own conditions."""
    if route not in (PLAYLIST_ROUTE, FILE_ROUTE) or LOOKUP_KEY not in request.app:
        return None
    package = request.app[LOOKUP_KEY](request.match_info["stream"])
    rendition = package.renditions.get(request.match_info["rendition"]) if package else None
    if rendition is None:
        return None
    if route == PLAYLIST_ROUTE:  # S 6.2.5.2: a blocking reload, unless ENDLIST is there
        return "playlist" if "_HLS_msn" in request.query and not rendition.state.ended else None
    name = request.match_info["file"]
    # S 6.2.6: a hinted part not yet written is held until it exists.
    return "part" if name not in rendition.files and rendition.hinted(name) else None


def add_metrics_route(app: web.Application, metrics: ShopcastMetrics) -> None:
    """Mount ``GET /metrics`` and the HTTP middleware (outermost: it sees every status)."""
    # No auth, like the HLS routes: operators' Prometheus scrapes it; nothing in it is secret
    # (stream ids, counts, timings), and the server binds where the operator configures.
    app.router.add_get("/metrics", metrics.handle)
    app.middlewares.insert(0, metrics.middleware)


class RecordingStoreCollector(Collector):
    """The recordings store's health (pending uploads, failures) read at scrape time."""

    def __init__(self, store: RecordingStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        health = self.store.health()
        labels = [self.store.name]
        pending = GaugeMetricFamily(
            "shopcast_record_store_pending",
            "Recording files written locally and not yet confirmed by the store (S3 uploads)",
            labels=["store"],
        )
        pending.add_metric(labels, health.pending)
        failures = CounterMetricFamily(
            "shopcast_record_store_failures",
            "Failed writes or upload attempts of the recordings store (each retry counts)",
            labels=["store"],
        )
        failures.add_metric(labels, health.failed)
        degraded = GaugeMetricFamily(
            "shopcast_record_store_degraded",
            "1 while the recordings store's last operation failed (the reason is in the log)",
            labels=["store"],
        )
        degraded.add_metric(labels, 0.0 if health.last_error is None else 1.0)
        yield from (pending, failures, degraded)
