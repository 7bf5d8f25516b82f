"""The origins behind the edge: one GET, tried on the next origin when a connection fails."""

from __future__ import annotations

import logging
import time

import aiohttp

log = logging.getLogger("shopcast.edge.upstream")
#: Response headers the edge keeps (the rest are per-hop or the edge's own to set).
KEPT_HEADERS = (
    "Content-Type",
    "Cache-Control",
    "Access-Control-Allow-Origin",
    "Access-Control-Expose-Headers",
    "Content-Security-Policy",
    "Last-Modified",
    "ETag",
    "Expires",
)
USER_AGENT = "shopcast-edge/1"


class AllOriginsFailed(ConnectionError):
    """No origin answered (each one's connection failed)."""


class Origins:
    """Origin base URLs in preference order; one that fails is skipped for ``retry_after`` s."""

    def __init__(self, urls: list[str], retry_after: float = 5.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.retry_after = retry_after
        self._down_until = [0.0] * len(self.urls)

    def replace(self, urls: list[str]) -> None:
        """A new list (the cluster's live origins); origins still in it stay marked as they were."""
        down = dict(zip(self.urls, self._down_until, strict=True))
        self.urls = [u.rstrip("/") for u in urls]
        self._down_until = [down.get(u, 0.0) for u in self.urls]

    def order(self, now: float) -> list[int]:
        """Healthy origins first (in configured order), then the ones marked down."""
        up = [i for i, t in enumerate(self._down_until) if t <= now]
        return up + [i for i in range(len(self.urls)) if i not in up]

    def mark_down(self, index: int, now: float) -> None:
        self._down_until[index] = now + self.retry_after

    def mark_up(self, index: int) -> None:
        self._down_until[index] = 0.0


class UpstreamResult:
    __slots__ = ("body", "headers", "location", "origin", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes,
        origin: str,
        location: str | None = None,
    ) -> None:
        self.status, self.headers, self.body, self.origin = status, headers, body, origin
        self.location = location  # a redirect's target, as the origin sent it

    @property
    def redirect(self) -> bool:
        return self.status in REDIRECTS and self.location is not None


#: Redirects an origin answers for a stream another origin owns (307 today).
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Connection-level failures: refused, reset, or the origin died mid-response.
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


async def get_once(
    session: aiohttp.ClientSession, base: str, target: str, timeout: float
) -> UpstreamResult:
    """GET ``target`` (path + query) from the origin at ``base``; connection errors raise."""
    async with session.get(
        base + target,
        headers={"User-Agent": USER_AGENT, "Via": "1.1 shopcast-edge"},
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=2.0),
    ) as resp:
        body = await resp.read()
        headers = {k: resp.headers[k] for k in KEPT_HEADERS if k in resp.headers}
        if "Age" in resp.headers:
            headers["Age"] = resp.headers["Age"]
        return UpstreamResult(resp.status, headers, body, base, resp.headers.get("Location"))


async def fetch(
    session: aiohttp.ClientSession, origins: Origins, target: str, timeout: float
) -> UpstreamResult:
    """GET ``target`` (path + query) from the first origin whose connection holds."""
    last: Exception | None = None
    for index in origins.order(time.monotonic()):
        try:
            result = await get_once(session, origins.urls[index], target, timeout)
        except CONNECTION_ERRORS as exc:
            # Connection refused/reset, or the origin died mid-response: try the next one.
            log.warning("origin %s failed for %s: %s", origins.urls[index], target, exc)
            origins.mark_down(index, time.monotonic())
            last = exc
        except TimeoutError as exc:
            # A slow origin is not a dead one (blocking requests are slow by design): no failover.
            raise AllOriginsFailed(f"origin {origins.urls[index]} timed out") from exc
        else:
            origins.mark_up(index)
            return result
    raise AllOriginsFailed(f"no origin answered: {last}")
