"""Which origin serves a live stream: its owner as the cluster store says, or as an origin's
redirect said, remembered for at most ``ttl`` seconds so a move is followed within one.

``fetch_live`` is the one upstream GET of a live object: to the remembered owner (or any
configured origin when none is known); a redirect is followed once and remembered; a
connection error or a 404 from the owner re-resolves and tries the new owner once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from cdn_edge.upstream import (
    CONNECTION_ERRORS,
    AllOriginsFailed,
    Origins,
    UpstreamResult,
    fetch,
    get_once,
)

log = logging.getLogger("shopcast.edge.routing")
#: stream id → the owning origin's base URL; None when no live origin owns it or the answer is
#: not known (the configured origins are asked then: they redirect to the owner).
OwnerLookup = Callable[[str], Awaitable[str | None]]
#: The issue's bound on how stale a remembered owner may be.
ROUTE_TTL = 1.0


class StreamRoutes:
    """Owner per stream, remembered ``ttl`` s; concurrent lookups of one stream share one query."""

    def __init__(
        self,
        lookup: OwnerLookup | None,
        ttl: float = ROUTE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl, self.clock = ttl, clock
        self._known: dict[str, tuple[str | None, float]] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self.lookups = 0  # owner lookups made: one per stream per ttl however many viewers
        #: Upstream answers that sent a fetch to another origin, by why.
        self.moves = {"redirect": 0, "not_found": 0, "unreachable": 0}

    def learn(self, stream: str, base: str | None) -> None:
        if len(self._known) >= 10_000:
            self._known.clear()  # bounded: routes are re-learnt in one query each
        self._known[stream] = (base, self.clock())

    def forget(self, stream: str) -> None:
        self._known.pop(stream, None)

    async def owner(self, stream: str, max_age: float | None = None) -> str | None:
        """The owner remembered within ``max_age`` (default ``ttl``) s, else one looked up now
        (None: ask any configured origin)."""
        known = self._known.get(stream)
        age = self.ttl if max_age is None else min(max_age, self.ttl)
        if known is not None and self.clock() - known[1] < age:
            return known[0]
        if self.lookup is None:
            return None
        pending = self._pending.get(stream)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(stream))
            self._pending[stream] = pending
            pending.add_done_callback(lambda _: self._pending.pop(stream, None))
        return await asyncio.shield(pending)

    async def _look_up(self, stream: str) -> str | None:
        assert self.lookup is not None
        self.lookups += 1
        base = await self.lookup(stream)
        self.learn(stream, base)
        return base


def redirect_base(location: str, target: str) -> str | None:
    """The origin base URL a redirect for ``target`` (path + query) points at, or None if it
    is not the same object on another origin (then it is not followed)."""
    if len(location) > 2048:
        return None
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    path = target.partition("?")[0]
    if not parts.path.endswith(path):
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path[: len(parts.path) - len(path)]}"


async def fetch_live(
    session: aiohttp.ClientSession,
    origins: Origins,
    routes: StreamRoutes,
    stream: str,
    target: str,
    timeout: float,
) -> UpstreamResult:
    """GET a live stream's ``target`` from its owner, following a move once (module doc)."""
    base = await routes.owner(stream)
    for attempt in range(2):
        last = attempt == 1
        try:
            if base is None:
                result = await fetch(session, origins, target, timeout)
            else:
                result = await get_once(session, base, target, timeout)
        except TimeoutError as exc:
            # A slow owner is not a moved one (blocking requests are slow by design).
            raise AllOriginsFailed(f"origin {base} timed out") from exc
        except (*CONNECTION_ERRORS, AllOriginsFailed) as exc:
            log.warning("origin %s failed for %s: %s", base or "(any)", target, exc)
            retry, moved = (False, None) if last else await _resolve_again(routes, stream, base)
            if not retry:
                raise AllOriginsFailed(f"no origin answered: {exc}") from exc
            routes.moves["unreachable"] += 1
            base = moved
            continue
        if result.redirect:
            assert result.location is not None
            moved = redirect_base(result.location, target)
            if last or moved is None:
                # A second hop (or a redirect elsewhere) is not a stream move: no loops.
                raise AllOriginsFailed(f"origin {result.origin} redirected to {result.location}")
            routes.learn(stream, moved)
            routes.moves["redirect"] += 1
            base = moved
            continue
        if result.status == 404 and not last and base is not None:
            # The owner we remembered has no such stream: it may have moved since.
            retry, moved = await _resolve_again(routes, stream, base)
            if retry:
                routes.moves["not_found"] += 1
                base = moved
                continue
        return result
    raise AssertionError("unreachable")


async def _resolve_again(
    routes: StreamRoutes, stream: str, tried: str | None
) -> tuple[bool, str | None]:
    """Whether to try again after ``tried`` failed, and where: the owner looked up afresh, or
    (None) the configured origins when ``tried`` was a remembered owner and none is known now."""
    routes.forget(stream)
    fresh = await routes.owner(stream)
    if fresh is not None and fresh != tried:
        return True, fresh
    # The configured origins redirect to the owner, or answer as they see it.
    return tried is not None and fresh is None, None
