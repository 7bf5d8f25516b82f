"""The origin process: store, RTMP ingest, HTTP app — started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ingest.media import MediaKind
from ingest.rtmp.connection import RTMPLimits
from ingest.rtmp.server import RTMPServer, RTMPServerSettings
from ingest.sessions import INPUT_SEPARATOR, LiveStreams, PublishSession
from ingest.srt.server import SrtServer, SrtSettings, SrtUnavailable
from ingest.whip.endpoint import WhipEndpoint
from ingest.whip.session import WhipSettings
from packager import access
from packager.origin import add_hls_routes, add_picture_routes, add_vod_routes
from packager.stores import open_store
from shopcast.api import OWNERS_KEY, TOKENS_KEY, make_app
from shopcast.clips import ClipService, add_clip_routes
from shopcast.cluster import NodeRegistry, StreamLeases, node_identity, show_cost
from shopcast.cluster.routing import OwnerRoutes, RecordingRoutes
from shopcast.config import Config
from shopcast.failover import LeasedShows
from shopcast.health import Readiness, add_health_routes
from shopcast.hooks import PublishHook, TagWebhooks, Webhooks
from shopcast.metrics import ShopcastMetrics, add_metrics_route
from shopcast.pipeline import Pipelines, packager_config
from shopcast.recordings import Recordings
from shopcast.store import DatabaseUnavailable, make_store
from shopcast.tags import TagService, tag_json
from shopcast.thumbnails import Thumbnails
from shopcast.web import add_web_routes

log = logging.getLogger(__name__)
DEMO_STREAM = "demo"


@dataclass(frozen=True)
class Welcome:
    """What a newcomer needs after the first start (printed by the CLI)."""

    api_token: str | None  # set only when the token was generated now
    demo_key: str | None  # set only when the demo stream was created now


class ShopcastServer:
    """start → run → close life cycle of the origin."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = make_store(config.store)  # opened by start()
        self.tokens = config.api.tokens  # or the stored one, known once started
        self.welcome = Welcome(None, None)
        self._stream_ids: list[str] = []  # as of the last metrics scrape
        ing = config.ingest
        self.streams = LiveStreams(
            self._authorize,
            on_duplicate=ing.on_duplicate_publisher,
            hub_queue_size=ing.hub_queue_size,
            max_publishers=ing.max_publishers,
        )
        self.rtmp = RTMPServer(
            self.streams,
            RTMPServerSettings(
                app=ing.rtmp_app,
                handshake_timeout=ing.handshake_timeout,
                idle_timeout=ing.idle_timeout,
                read_pacing=ing.read_pacing,
                read_pacing_publishers=ing.read_pacing_publishers,
                limits=RTMPLimits(
                    max_message_size=ing.max_message_size,
                    max_chunk_size=ing.max_chunk_size,
                    max_buffered=ing.max_buffered,
                ),
            ),
        )
        pk = config.packager
        self.metrics = ShopcastMetrics()
        #: Publish target → whether that named input is a backup (as its key lookup said).
        self._backup_inputs: dict[str, bool] = {}
        self.streams.on_input_start.append(self._mark_backup)  # before the pipelines see it
        self.pipelines = Pipelines(
            self.streams,
            config.transcode,
            packager_config(
                pk.part_target,
                config.transcode,
                window_segments=pk.window_segments,
                reconnect_window=pk.reconnect_window,
            ),
            listener=self.metrics,
            continuity=config.continuity,
        )
        self.metrics.watch(lambda: self._stream_ids, self.streams, self.pipelines.pipelines)
        self.pipelines.on_released.append(self.metrics.forget_stream)
        self.metrics.before_scrape.append(self._refresh_stream_ids)
        hooks = config.hooks
        self.webhooks = Webhooks(hooks.webhook_urls, hooks.webhook_secret)
        self.publish_hook: PublishHook | None = None
        if hooks.on_publish:
            self.publish_hook = PublishHook(
                hooks.on_publish, hooks.on_publish_timeout, hooks.webhook_secret
            )
            self.streams.admission = self.publish_hook
        self.streams.on_session_start.append(
            lambda s: self.webhooks.emit(
                "stream.started",
                {"stream_id": s.stream_id, "protocol": s.publisher.protocol},
            )
        )
        self.streams.on_session_end.append(
            lambda s: self.webhooks.emit(
                "stream.ended",
                {
                    "stream_id": s.stream_id,
                    "error": self.streams.states[s.stream_id].last_error,
                    "duration": round(time.time() - s.started_at, 3),
                },
            )
        )
        self.pipelines.on_interrupted.append(
            lambda stream_id, reason: self.webhooks.emit(
                "stream.interrupted", {"stream_id": stream_id, "reason": reason}
            )
        )
        self.pipelines.on_resumed.append(
            lambda stream_id, slate_seconds: self.webhooks.emit(
                "stream.resumed", {"stream_id": stream_id, "slate_seconds": slate_seconds}
            )
        )
        self.recordings = Recordings(
            config.record, self.store, open_store(config.record), self.webhooks, self.vod_url
        )
        self.pipelines.recordings = self.recordings
        self.metrics.watch_recorder(self.recordings.recorder)
        self.metrics.watch_store(self.recordings.media)
        cl = config.cluster
        self.registry = NodeRegistry(self.store, cl, load=self._load)
        self.leases = StreamLeases(
            self.store,
            cl.node_timeout,
            on_duplicate=ing.on_duplicate_publisher,
            # A publisher back within the reconnect window, on any origin, continues the show.
            show_gap=pk.reconnect_window,
            shows_here=self._shows_here,
            on_lost=self._lease_lost,
        )
        self.streams.ownership = self.leases.admit
        # A show whose lease says it began before this node took it goes on here (failover).
        self.pipelines.shows = LeasedShows(self.store, self.leases.lease)
        self.registry.on_heartbeat.append(self.leases.renew)
        self.metrics.cluster_load.set_function(self._load)
        self.metrics.cluster_leases.set_function(
            lambda: sum(self.leases.holds(stream_id) for stream_id in list(self.leases.held))
        )
        self._cluster_task: asyncio.Task[None] | None = None
        self.tags = TagService(
            self.store,
            self.streams,
            self.pipelines,
            listeners=[self.metrics, TagWebhooks(self.webhooks)],
        )
        self.app = make_app(
            self.store,
            self.streams,
            self.tokens,
            self.tags,
            self.pipelines,
            self.urls,
            playback=(config.playback.secret, config.playback.token_ttl),
            recordings=self.recordings,
            registry=self.registry,
        )
        self.thumbnails = Thumbnails(self.store, self.pipelines, self.recordings)
        add_picture_routes(self.app, self.thumbnails)
        # A request for a stream another origin owns goes there: a redirect for playback,
        # forwarded for the API calls that act on the live show.
        self.owners = OwnerRoutes(self.registry, self.leases)
        self.app[OWNERS_KEY] = self.owners
        add_hls_routes(self.app, self.pipelines.package, config.playback.secret, self.owners)
        # A recording in one node's file store is served there (307), like a live show.
        self.recording_routes = RecordingRoutes(self.registry, self.recordings)
        add_vod_routes(self.app, self.recordings, self.recordings.media, self.recording_routes)
        add_clip_routes(self.app, ClipService(self.recordings))
        add_web_routes(self.app)
        add_metrics_route(self.app, self.metrics)
        #: ``/readyz``: ready to take publishers (the store answers, the node is registered).
        self.readiness = Readiness({"store": self._store_ready, "node": self._node_ready})
        add_health_routes(self.app, self.readiness)
        self.whip = WhipEndpoint(
            self.streams,
            self._stream_exists,
            WhipSettings.from_section(config.whip),
            on_tag=self._whip_tag,
        )
        self.whip.add_routes(self.app)
        sc = config.srt
        self.srt = SrtServer(
            self.streams,
            SrtSettings(
                latency_ms=sc.latency,
                passphrase=sc.passphrase,
                pbkeylen=sc.pbkeylen,
                max_sessions=sc.max_sessions,
                idle_timeout=ing.idle_timeout,
            ),
        )
        self.srt_available = False
        self._runner: web.AppRunner | None = None
        self.http_port = 0
        #: Awaited first thing in :meth:`close` (e.g. the ``--demo`` publisher stops).
        self.before_close: list[Callable[[], Awaitable[None]]] = []

    async def _first_start(self) -> None:
        """The stored API token (made now when none is configured or stored) and the demo
        stream on an empty store: once per database, however many nodes start together."""
        first = await self.store.first_start(DEMO_STREAM, make_token=not self.config.api.tokens)
        if not self.config.api.tokens:
            assert first.api_token is not None
            self.tokens = (first.api_token,)
            self.app[TOKENS_KEY] = self.tokens
        self.welcome = Welcome(first.new_api_token, first.new_demo_key)

    async def _authorize(self, stream_key: str) -> str | None:
        """The publish target of a key: the stream id, or "<stream id>/<input>" for a named
        input's key."""
        rec = await self.store.stream_for_key(stream_key)
        if rec is None:
            named = await self.store.input_for_key(stream_key)
            if named is None:
                return None
            target = f"{named.stream_id}{INPUT_SEPARATOR}{named.name}"
            self._backup_inputs[target] = named.backup  # read when its session opens
            return target
        self.recordings.stream_published(rec)
        return rec.id

    def _mark_backup(self, session: PublishSession) -> None:
        target = f"{session.stream_id}{INPUT_SEPARATOR}{session.input}"
        session.backup = self._backup_inputs.pop(target, False)

    def _shows_here(self, stream_id: str) -> bool:
        """Whether this node has the stream's show: a publisher, or playlists not ended yet
        (the reconnect window, the slate)."""
        if stream_id in self.streams.sessions:
            return True
        pipeline = self.pipelines.pipelines.get(stream_id)
        return pipeline is not None and not pipeline.package.ended

    def _load(self) -> float:
        """Transcoding slots in use: every show here weighted by what its ladder costs."""
        load = 0.0
        for stream_id, pipeline in self.pipelines.pipelines.items():
            if self._shows_here(stream_id):
                renditions = pipeline.transcoder.renditions if pipeline.transcoder else []
                load += show_cost([(r.kind is MediaKind.VIDEO, r.passthrough) for r in renditions])
        return load

    async def _lease_lost(self, stream_id: str, reason: str) -> None:
        """Another node owns the stream now: its publisher and show stop here."""
        self.metrics.cluster_leases_lost.inc()
        await self.pipelines.end_show(stream_id, reason)

    async def _stream_exists(self, stream_id: str) -> bool:
        return await self.store.get_stream(stream_id) is not None

    async def _whip_tag(self, stream_id: str, body: Any) -> dict[str, Any]:
        return tag_json(await self.tags.create(stream_id, body, "cue"))

    async def _store_ready(self) -> str | None:
        try:
            await self.store.schema_version()
        except DatabaseUnavailable as exc:
            return f"store unavailable: {exc}"
        return None

    async def _node_ready(self) -> str | None:
        if self.registry.registered:
            return None
        return "this node is not registered in the cluster (no heartbeat stored yet or lately)"

    async def _refresh_stream_ids(self) -> None:
        try:
            self._stream_ids = [s.id for s in await self.store.list_streams()]
        except DatabaseUnavailable as exc:  # the live figures still count; the list waits
            log.debug("metrics: stream list not refreshed: %s", exc)
            self.metrics.store_available.set(0)
        else:
            self.metrics.store_available.set(1)

    async def start(self) -> None:
        """Open the store (``DatabaseUnavailable`` if it cannot be used), then listen."""
        srv = self.config.server
        await self.store.open()
        try:
            await self._first_start()
        except BaseException:
            await self.store.close()
            raise
        # Known before listening only when configured: crash recovery then skips the
        # recordings other nodes are making.
        self.recordings.node_id = self.config.cluster.node_id
        await self.recordings.start()
        await self.rtmp.start(srv.rtmp_host, srv.rtmp_port)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, srv.http_host, srv.http_port)
        await site.start()
        http_port = int(self._runner.addresses[0][1])
        log.info("HTTP listening on %s:%d", srv.http_host, http_port)
        if self.config.srt.enabled:
            try:
                await self.srt.start(self.config.srt.host, self.config.srt.port)
                self.srt_available = True
            except SrtUnavailable as exc:  # RTMP and WHIP still serve
                log.error("%s", exc)
        node_id, http_url, rtmp_url = node_identity(
            self.config.cluster,
            srv.public_host,
            http_port,
            self.rtmp.port,
            self.config.ingest.rtmp_app,
        )
        srt_url = f"srt://{srv.public_host}:{self.srt.port}" if self.srt_available else ""
        self.recordings.node_id = node_id
        try:
            await self.registry.start(node_id, http_url, rtmp_url, srt_url)
        except BaseException:
            await self.close()
            raise
        self.leases.node_id = node_id
        self._cluster_task = asyncio.get_running_loop().create_task(
            self.registry.run(), name="cluster-heartbeat"
        )
        self.http_port = http_port  # announces the start (the CLI waits for it)
        self.recordings.serve()

    def urls(self, stream_id: str, stream_key: str) -> dict[str, str]:
        host = self.config.server.public_host
        return {
            "rtmp_url": f"rtmp://{host}:{self.rtmp.port}/{self.config.ingest.rtmp_app}/{stream_key}",
            "whip_url": f"http://{host}:{self.http_port}/whip/{stream_id}",
            **self._srt_url(host, stream_id, stream_key),
            "playback_url": f"http://{host}:{self.http_port}/hls/{stream_id}/master.m3u8",
        }

    def vod_url(self, recording_id: str) -> str:
        """A recording's playback URL (signed when playback needs tokens)."""
        host = self.config.server.public_host
        url = f"http://{host}:{self.http_port}/vod/{recording_id}/master.m3u8"
        secret, ttl = self.config.playback.secret, self.config.playback.token_ttl
        if secret:
            token = access.mint(secret, recording_id, int(time.time()) + ttl, scope="vod")
            url += f"?{access.TOKEN_PARAM}={token}"
        return url

    def _srt_url(self, host: str, stream_id: str, stream_key: str) -> dict[str, str]:
        if not self.srt_available:
            return {}
        stream = f"#!::r={stream_id},m=publish,k={stream_key}"
        # Raw, not percent-encoded: ffmpeg 5.1 and phone apps pass streamid on verbatim.
        return {"srt_url": f"srt://{host}:{self.srt.port}?streamid={stream}"}

    async def close(self) -> None:
        self.readiness.closing = True
        for hook in self.before_close:
            await hook()
        await self.rtmp.close("server shutting down")
        await self.srt.close("server shutting down")
        await self.whip.close("server shutting down")
        await self.pipelines.close()
        if self._cluster_task is not None:
            self._cluster_task.cancel()
            await asyncio.wait({self._cluster_task})
        await self.leases.release_all()
        await self.registry.close()
        await self.recordings.close()
        await self.webhooks.close()
        if self.publish_hook is not None:
            await self.publish_hook.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.store.close()

    async def run_until_signal(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.close()
