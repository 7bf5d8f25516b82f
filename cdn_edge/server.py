"""``shopcast edge``: an HTTP cache in front of the origins for ``/hls/<id>/…``.

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

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdn_edge.cache import CachedResponse, ResponseCache, freshness
from cdn_edge.collapse import Collapser
from cdn_edge.metrics import EdgeMetrics
from cdn_edge.paths import BadTarget, Target, cache_key, parse_target, preload_hints
from cdn_edge.upstream import AllOriginsFailed, Origins, UpstreamResult, fetch
from cdn_edge.viewers import ViewerTracker
from packager import access

log = logging.getLogger("shopcast.edge")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Age"}
#: Edge-minted upstream tokens live this long and are renewed with this much left.
_UPSTREAM_TOKEN_TTL, _UPSTREAM_TOKEN_RENEW = 3600, 600


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


class EdgeServer:
    """Life cycle: ``start()`` binds, ``close()`` stops; ``run_until_signal()`` for the CLI."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.origins = Origins(list(config.origins))
        self.cache = ResponseCache(config.cache_bytes)
        self.collapser: Collapser[CachedResponse] = Collapser()
        self.viewers = ViewerTracker(config.viewer_window)
        self.metrics = EdgeMetrics()
        self.metrics.waiters.set_function(lambda: self.collapser.waiters)
        self.metrics.cache_bytes.set_function(lambda: self.cache.size)
        self.port = 0
        self._upstream_tokens: dict[str, tuple[str, int]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._reporter: asyncio.Task[None] | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
        self.app.router.add_get("/{tail:.*}", self._serve)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=256, ttl_dns_cache=60),
            auto_decompress=True,
        )
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=2048)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._reporter = asyncio.ensure_future(self._report_loop())
        log.info("edge %s listening on %s for %s", self.config.edge_id, self.url, self.origins.urls)

    async def close(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
        if self._runner is not None:
            await self._runner.cleanup()
        await self.collapser.cancel_all()
        if self._session is not None:
            await self._session.close()

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(f"shopcast edge listening on {self.url} (origins: {', '.join(self.origins.urls)})")
        try:
            await stop.wait()
        finally:
            await self.close()

    # -- requests ------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            target = parse_target(request.raw_path)
        except BadTarget as exc:
            self.metrics.rejected.labels("path").inc()
            return self._local_error(exc.status, str(exc))
        secret = self.config.playback_secret
        if target.stream is not None:
            if secret:
                why = access.verify(secret, target.path, target.token, time.time())
                if why is not None:
                    self.metrics.rejected.labels("token").inc()
                    return self._local_error(403, why)
            client = target.token or f"{request.remote}|{request.headers.get('User-Agent', '')}"
            self.viewers.seen(target.stream, client, time.monotonic())
        # Without the secret the origin judges each token, so each token is its own object.
        key = cache_key(target, token_in_key=not secret)
        entry = await self._lookup(key, target)
        if entry is None:
            return self._local_error(502, "no origin answered", cache=False)
        body = entry.body
        if secret and target.token and target.is_playlist and entry.status == 200:
            body = access.carry_token(body.decode(), target.token).encode()
        self.metrics.bytes_out.inc(len(body))
        headers = dict(entry.headers)
        headers["Age"] = str(entry.current_age(time.monotonic()))
        if target.stream is not None:
            headers.update(CORS)
        return web.Response(status=entry.status, body=body, headers=headers)

    async def _lookup(self, key: str, target: Target) -> CachedResponse | None:
        entry = self.cache.get(key, time.monotonic())
        if entry is not None:
            self.metrics.hits.inc()
            return entry
        future, joined = self.collapser.start(key, functools.partial(self._fetch, key, target))
        (self.metrics.collapsed if joined else self.metrics.misses).inc()
        try:
            return await self.collapser.wait(future)
        except (AllOriginsFailed, aiohttp.ClientError):
            return None

    async def _fetch(self, key: str, target: Target) -> CachedResponse:
        """One upstream request; the result is cached before any waiter sees it."""
        assert self._session is not None
        token = self._upstream_token(target) if self.config.playback_secret else target.token
        kind = "playlist" if target.is_playlist else "media"
        started = time.monotonic()
        try:
            result = await fetch(
                self._session, self.origins, target.upstream(token), self.config.upstream_timeout
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
        return CachedResponse(result.status, result.headers, body, now, age, ttl)

    def _prefetch_hints(self, playlist: Target, text: str) -> None:
        for raw in preload_hints(playlist.path, text):
            try:
                hinted = parse_target(raw)
            except BadTarget:
                continue
            if hinted.stream != playlist.stream:
                continue
            hinted = Target(hinted.path, hinted.stream, (), hinted.token or playlist.token)
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
        held = self._upstream_tokens.get(target.stream)
        if held is None or held[1] - now < _UPSTREAM_TOKEN_RENEW:
            expires = now + _UPSTREAM_TOKEN_TTL
            held = (access.mint(self.config.playback_secret, target.stream, expires), expires)
            self._upstream_tokens[target.stream] = held
        return held[0]

    @staticmethod
    def _local_error(status: int, message: str, cache: bool = True) -> web.Response:
        return web.Response(
            status=status,
            text=message + "\n",
            headers={**CORS, "Cache-Control": "public, max-age=1" if cache else "no-store"},
        )

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                **CORS,
                "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": "*",
                "Access-Control-Max-Age": "86400",
            },
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- viewer reports ------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        reported: set[str] = set()
        while True:
            await asyncio.sleep(self.config.report_interval)
            counts = self.viewers.counts(time.monotonic())
            for stream in reported - set(counts):
                self.metrics.viewers.remove(stream)
            for stream, n in counts.items():
                self.metrics.viewers.labels(stream).set(n)
            # Streams that just lost their last viewer are reported once more, as 0.
            payload = {**dict.fromkeys(reported - set(counts), 0), **counts}
            reported = set(counts)
            if self.config.origin_token:
                await self.report(payload)

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
