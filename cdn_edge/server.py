"""``shopcast edge``: an HTTP cache in front of the origins for ``/hls/<id>/…``, replays
(``/vod/<recording id>/…``) and clips (``/clips/<clip id>.mp4``, byte ranges cut from the cache).

Every object (init, segment, part, playlist keyed by ``_HLS_msn``/``_HLS_part``/``_HLS_skip``)
is fetched from the origin at most once per freshness lifetime: concurrent requests for a key
share one upstream request, blocking playlist requests included, and the part a playlist's
preload hint names is requested at once so it arrives with (not after) the viewers' requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.http import RawRequestMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdn_edge.cache import CachedResponse, ResponseCache, freshness
from cdn_edge.collapse import Collapser
from cdn_edge.http1 import KEEPALIVE_TIMEOUT, EdgeConnection
from cdn_edge.metrics import EdgeMetrics
from cdn_edge.paths import (
    BadTarget,
    Target,
    byte_range,
    cache_key,
    parse_target,
    preload_hints,
)
from cdn_edge.routing import StreamRoutes, fetch_live
from cdn_edge.upstream import AllOriginsFailed, Origins, UpstreamResult, fetch
from cdn_edge.viewers import ViewerTracker
from cdn_edge.wire import ResponseHead, http_date, simple_head
from packager import access

if TYPE_CHECKING:
    from cdn_edge.cluster import EdgeDirectory

log = logging.getLogger("shopcast.edge")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Age"}
#: Edge-minted upstream tokens live this long and are renewed with this much left.
_UPSTREAM_TOKEN_TTL, _UPSTREAM_TOKEN_RENEW = 3600, 600
#: Raw targets remembered with their parse (viewers ask for the same few objects).
_TARGET_MEMO = 4096
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_PREFLIGHT = (
    *CORS.items(),
    ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Max-Age", "86400"),
)


@dataclass(frozen=True)
class EdgeConfig:
    origins: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8081
    #: Shared with the origin: tokens are checked here, forged ones never travel upstream.
    playback_secret: str = ""
    #: API token for ``POST /api/v1/edge-reports`` (no reports without one).
    origin_token: str = ""
    cache_bytes: int = 256 << 20
    #: Longer than the origin's blocking hold (3 target durations) plus transfer.
    upstream_timeout: float = 20.0
    report_interval: float = 5.0
    viewer_window: float = 15.0
    edge_id: str = field(default_factory=lambda: f"edge-{int(time.time() * 1000):x}")
    #: The cluster store's URL: stream owners come from it, and the edge heartbeats into it.
    cluster: str = ""
    #: The cluster's ``[cluster] node_timeout``: the edge heartbeats three times within it.
    node_timeout: float = 6.0


class EdgeServer:
    """Life cycle: ``start()`` binds, ``close()`` stops; ``run_until_signal()`` for the CLI."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.origins = Origins(list(config.origins))
        self.directory: EdgeDirectory | None = None
        if config.cluster:
            # Imported here: the store (and asyncpg) load only for a cluster edge.
            from cdn_edge.cluster import EdgeDirectory

            self.directory = EdgeDirectory(config.cluster, config.edge_id, "", config.node_timeout)
        self.routes = StreamRoutes(self.directory.owner if self.directory else None)
        self.cache = ResponseCache(config.cache_bytes)
        self.collapser: Collapser[CachedResponse] = Collapser()
        self.viewers = ViewerTracker(config.viewer_window)
        self.metrics = EdgeMetrics()
        self.metrics.route_counts.routes = self.routes
        self.metrics.waiters.set_function(lambda: self.collapser.waiters)
        self.metrics.cache_bytes.set_function(lambda: self.cache.size)
        self.port = 0
        self.connections: set[EdgeConnection] = set()
        self._targets: dict[str, tuple[Target, str] | BadTarget] = {}
        self._upstream_tokens: dict[str, tuple[str, int]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        if self.directory is not None:
            await self.directory.open()  # DatabaseUnavailable: the CLI says why and exits
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=256, ttl_dns_cache=60),
            auto_decompress=True,
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: EdgeConnection(self, loop), self.config.host, self.config.port, backlog=2048
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if self.directory is not None:
            self.directory.http_url = self.url
            await self._heartbeat({})  # registered (and the origins known) before serving
        self._tasks = [
            asyncio.ensure_future(self._report_loop()),
            asyncio.ensure_future(self._idle_loop()),
        ]
        log.info("edge %s listening on %s for %s", self.config.edge_id, self.url, self.origins.urls)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
        await self.collapser.cancel_all()
        if self._session is not None:
            await self._session.close()
        if self.directory is not None:
            await self.directory.close()

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        source = f"cluster {self.config.edge_id}" if self.directory else "origins"
        print(f"shopcast edge listening on {self.url} ({source}: {', '.join(self.origins.urls)})")
        try:
            await stop.wait()
        finally:
            await self.close()

    async def _idle_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(KEEPALIVE_TIMEOUT / 8)
            horizon = loop.time() - KEEPALIVE_TIMEOUT
            for conn in [c for c in self.connections if c.idle and c.last_active < horizon]:
                conn.close()

    # -- requests ------------------------------------------------------------------------------

    def dispatch(self, conn: EdgeConnection, request: RawRequestMessage) -> None:
        """Route one request: cached objects, ``/metrics``, CORS preflight; 405 for the rest."""
        method = request.method
        if method == "GET" or method == "HEAD":
            if request.path.partition("?")[0] == "/metrics":
                self._metrics(conn)
            else:
                self._serve(conn, request)
        elif method == "OPTIONS":
            conn.respond(simple_head(204, _PREFLIGHT, 0, http_date()), b"")
        else:
            body = b"405: Method Not Allowed\n"
            headers = (_TEXT, ("Allow", "GET, HEAD, OPTIONS"))
            conn.respond(simple_head(405, headers, len(body), http_date()), body)

    def _serve(self, conn: EdgeConnection, request: RawRequestMessage) -> None:
        raw = request.path
        parsed = self._targets.get(raw) or self._parse(raw)
        if isinstance(parsed, BadTarget):
            self.metrics.rejected.labels("path").inc()
            self._local_error(conn, parsed.status, str(parsed))
            return
        target, key = parsed
        now = time.monotonic()
        secret = self.config.playback_secret
        if target.stream is not None:
            if secret:
                why = access.verify(secret, target.path, target.token, time.time())
                if why is not None:
                    self.metrics.rejected.labels("token").inc()
                    self._local_error(conn, 403, why)
                    return
            if target.scope == "hls":  # viewers are counted per live stream
                self.viewers.seen(target.stream, target.token or conn.client(request), now)
        # Clips are progressive MP4: players ask for byte ranges, cut from the whole object.
        wanted = request.headers.get("Range") if target.scope == "clip" else None
        entry = self.cache.get(key, now)
        if entry is not None:
            self.metrics.requests.hits += 1
            self._send(conn, entry, target, now, wanted)
            return
        answer = functools.partial(self._answer, conn, target, wanted)
        if self.collapser.add_waiter(key, answer):
            self.metrics.requests.collapsed += 1
        else:
            self.collapser.join(key, functools.partial(self._fetch, key, target), answer)
            self.metrics.requests.misses += 1

    def _parse(self, raw: str) -> tuple[Target, str] | BadTarget:
        """``parse_target`` and the cache key, remembered for the next viewer asking the same."""
        parsed: tuple[Target, str] | BadTarget
        try:
            target = parse_target(raw)
        except BadTarget as exc:
            parsed = exc
        else:
            # Without the secret the origin judges each token, so each token is its own object.
            parsed = (target, cache_key(target, token_in_key=not self.config.playback_secret))
        if len(self._targets) >= _TARGET_MEMO:
            self._targets.clear()
        self._targets[raw] = parsed
        return parsed

    def _answer(
        self,
        conn: EdgeConnection,
        target: Target,
        wanted: str | None,
        future: asyncio.Future[CachedResponse],
    ) -> None:
        """A collapsed fetch is done: answer one of its waiters (all run in one pass)."""
        if future.cancelled():
            conn.close()
            return
        exc = future.exception()
        if exc is None:
            self._send(conn, future.result(), target, time.monotonic(), wanted)
        elif isinstance(exc, AllOriginsFailed | aiohttp.ClientError):
            self._local_error(conn, 502, "no origin answered", cache=False)
        else:
            log.error("fetch for %s failed", target.path, exc_info=exc)
            self._local_error(conn, 500, "internal error", cache=False)

    def _send(
        self,
        conn: EdgeConnection,
        entry: CachedResponse,
        target: Target,
        now: float,
        wanted: str | None = None,
    ) -> None:
        body = entry.body
        age = int(entry.age + now - entry.received)
        span = byte_range(wanted, len(body)) if wanted and entry.status == 200 else None
        if span is not None:
            self._send_range(conn, entry, span, age)
            return
        if (
            target.token
            and entry.status == 200
            and target.is_playlist
            and self.config.playback_secret
        ):
            body = access.carry_token(body.decode(), target.token).encode()
            head = entry.head.render(age, http_date(), len(body))
        else:
            head = entry.head.render(age, http_date())
        self.metrics.requests.bytes_out += len(body)
        conn.respond(head, body)

    def _send_range(
        self, conn: EdgeConnection, entry: CachedResponse, span: tuple[int, int], age: int
    ) -> None:
        """206 with bytes ``span`` of the cached object, or 416 when none of them is in it."""
        size = len(entry.body)
        first, last = span
        if first >= size:
            headers = (*CORS.items(), ("Content-Range", f"bytes */{size}"), _TEXT)
            conn.respond(simple_head(416, headers, 0, http_date()), b"")
            return
        body = entry.body[first : last + 1]
        fields = [(k, v) for k, v in entry.headers.items() if k != "Age"]
        fields.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        self.metrics.requests.bytes_out += len(body)
        conn.respond(ResponseHead(206, fields, len(body)).render(age, http_date()), body)

    async def _fetch(self, key: str, target: Target) -> CachedResponse:
        """One upstream request; the result is cached before any waiter sees it."""
        assert self._session is not None
        token = self._upstream_token(target) if self.config.playback_secret else target.token
        kind = "playlist" if target.is_playlist else "media"
        started = time.monotonic()
        try:
            if target.scope == "hls" and target.stream is not None:
                # A live stream lives on one origin (its owner), which may move.
                result = await fetch_live(
                    self._session,
                    self.origins,
                    self.routes,
                    target.stream,
                    target.upstream(token),
                    self.config.upstream_timeout,
                )
            else:
                result = await fetch(
                    self._session,
                    self.origins,
                    target.upstream(token),
                    self.config.upstream_timeout,
                )
        except AllOriginsFailed:
            self.metrics.upstream_errors.inc()
            raise
        now = time.monotonic()
        self.metrics.upstream.labels(kind).observe(now - started)
        entry = self._entry(result, target, token, now)
        self.cache.put(key, entry, now)
        if target.is_playlist and result.status == 200:
            self._prefetch_hints(target, entry.body.decode(errors="replace"))
        return entry

    def _entry(
        self, result: UpstreamResult, target: Target, token: str | None, now: float
    ) -> CachedResponse:
        body = result.body
        if self.config.playback_secret and token and target.is_playlist:
            # Cached without the edge's token; each viewer's own is carried on when served.
            body = body.replace(f"?{access.TOKEN_PARAM}={token}".encode(), b"")
        try:
            age = float(result.headers.get("Age", "0"))
        except ValueError:
            age = 0.0
        ttl = freshness(result.status, result.headers.get("Cache-Control"), age)
        headers = {**result.headers, **CORS} if target.stream is not None else result.headers
        if target.scope == "clip" and result.status == 200:
            headers = {**headers, "Accept-Ranges": "bytes"}
        return CachedResponse(result.status, headers, body, now, age, ttl)

    def _prefetch_hints(self, playlist: Target, text: str) -> None:
        for raw in preload_hints(playlist.path, text):
            try:
                hinted = parse_target(raw)
            except BadTarget:
                continue
            if hinted.stream != playlist.stream:
                continue
            hinted = Target(
                hinted.path, hinted.stream, (), hinted.token or playlist.token, hinted.scope
            )
            key = cache_key(hinted, token_in_key=not self.config.playback_secret)
            if key in self.collapser or self.cache.get(key, time.monotonic()) is not None:
                continue
            self.metrics.prefetches.inc()
            self.collapser.start(key, functools.partial(self._fetch, key, hinted))

    def _upstream_token(self, target: Target) -> str | None:
        """A token the edge mints itself, so cached objects do not depend on viewers' tokens."""
        if target.stream is None:
            return None
        now = int(time.time())
        scoped = f"{target.scope}/{target.stream}"
        held = self._upstream_tokens.get(scoped)
        if held is None or held[1] - now < _UPSTREAM_TOKEN_RENEW:
            expires = now + _UPSTREAM_TOKEN_TTL
            token = access.mint(self.config.playback_secret, target.stream, expires, target.scope)
            held = (token, expires)
            self._upstream_tokens[scoped] = held
        return held[0]

    @staticmethod
    def _local_error(conn: EdgeConnection, status: int, message: str, cache: bool = True) -> None:
        body = (message + "\n").encode()
        headers = (
            *CORS.items(),
            ("Cache-Control", "public, max-age=1" if cache else "no-store"),
            _TEXT,
        )
        conn.respond(simple_head(status, headers, len(body), http_date()), body)

    def _metrics(self, conn: EdgeConnection) -> None:
        body = generate_latest(self.metrics.registry)
        headers = (("Content-Type", CONTENT_TYPE_LATEST),)
        conn.respond(simple_head(200, headers, len(body), http_date()), body)

    # -- viewer reports ------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        reported: set[str] = set()
        interval = self.config.report_interval
        if self.directory is not None:
            interval = min(interval, self.config.node_timeout / 3)
        while True:
            await asyncio.sleep(interval)
            counts = self.viewers.counts(time.monotonic())
            for stream in reported - set(counts):
                self.metrics.viewers.remove(stream)
            for stream, n in counts.items():
                self.metrics.viewers.labels(stream).set(n)
            # Streams that just lost their last viewer are reported once more, as 0.
            payload = {**dict.fromkeys(reported - set(counts), 0), **counts}
            reported = set(counts)
            if self.directory is not None:
                await self._heartbeat(counts)
            elif self.config.origin_token:
                await self.report(payload)

    async def _heartbeat(self, counts: dict[str, int]) -> None:
        """The edge's node row (its viewers per stream) and the live origins, from the store."""
        assert self.directory is not None
        if urls := await self.directory.beat(counts):
            self.origins.replace(urls)

    async def report(self, counts: dict[str, int]) -> None:
        """``POST /api/v1/edge-reports`` to every origin (each one aggregates its own edges)."""
        assert self._session is not None
        body = {"edge_id": self.config.edge_id, "viewers": counts}
        headers = {"Authorization": f"Bearer {self.config.origin_token}"}
        for base in self.origins.urls:
            try:
                async with self._session.post(
                    f"{base}/api/v1/edge-reports",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=2.0),
                ) as resp:
                    if resp.status >= 300:
                        log.warning("viewer report to %s: HTTP %s", base, resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("viewer report to %s failed: %s", base, exc)
