"""The WHIP HTTP side (RFC 9725): endpoint ``/whip/<stream_id>``, sessions below it.

``POST`` an SDP offer with ``Authorization: Bearer <stream key>`` → ``201`` with the answer and
the session URL in ``Location``; ``PATCH`` the session URL with trickled candidates; ``DELETE``
it to stop. Refusals: 400 malformed offer, 401 key, 403 ``on_publish`` hook, 404 stream,
409 stream already live with ``on_duplicate_publisher = "reject"``, 413 body too large, 415
content type, 422 no supported codec (H.264/VP8 video, Opus audio) or an ICE restart, 429 rate
limit (per client address), 503 ``max_sessions`` reached. The session URL is the capability to
end the session: it holds 144 random bits and is only ever given to the publisher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiortc.sdp import SessionDescription

from ingest.sessions import LiveStreams, PublishRefused, RefusalReason, split_target
from ingest.shown import REASON_CHARS, shown
from ingest.whip.codecs import SUPPORTED_AUDIO, SUPPORTED_VIDEO
from ingest.whip.ice import PortRangeExhausted
from ingest.whip.session import OfferError, TagSink, WhipSession, WhipSettings

log = logging.getLogger(__name__)

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
MAX_BODY = 64 * 1024
_RETRY_AFTER = "5"
#: HTTP status of each registry refusal (RFC 9725 leaves the choice to the server).
REFUSAL_STATUS = {
    RefusalReason.BAD_KEY: 401,
    RefusalReason.DUPLICATE: 409,
    RefusalReason.HOOK_DENIED: 403,
    RefusalReason.FULL: 503,
}
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Retry-After",
}
STATIC = Path(__file__).resolve().parents[2] / "shopcast" / "static"
#: The publish page loads only its own script; camera preview is a MediaStream (no URL).
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per client address; idle buckets are forgotten."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, client: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= 10_000:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_full(self, now: float) -> None:
        for key, b in list(self._buckets.items()):
            if b.tokens + (now - b.stamp) * self.rate >= self.burst:
                del self._buckets[key]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers={**_CORS, **(headers or {})})


def check_offer(text: str) -> SessionDescription:
    """Reject what we cannot answer before any peer connection exists (``OfferError``)."""
    try:
        description = SessionDescription.parse(text)
    except Exception as exc:  # the parser raises whatever the bad line provokes
        raise OfferError(400, f"malformed SDP: {shown(repr(exc), REASON_CHARS)}") from exc
    media = [m for m in description.media if m.kind in ("audio", "video")]
    if not media:
        raise OfferError(400, "the offer has no audio or video section")
    for kind in ("audio", "video"):
        if sum(m.kind == kind for m in media) > 1:
            raise OfferError(400, f"more than one {kind} section (one of each at most)")
    for m in media:
        if m.direction not in (None, "sendonly", "sendrecv"):
            raise OfferError(422, f"{m.kind} section is {m.direction}: WHIP offers send media")
        ice, dtls = m.ice, m.dtls
        if (
            not ice
            or not ice.usernameFragment
            or not ice.password
            or not dtls
            or not dtls.fingerprints
        ):
            raise OfferError(400, f"{m.kind} section lacks ICE credentials or DTLS fingerprint")
        names = {c.name.lower() for c in m.rtp.codecs}
        supported = SUPPORTED_VIDEO if m.kind == "video" else SUPPORTED_AUDIO
        if not names & set(supported):
            raise OfferError(
                422,
                f"no supported {m.kind} codec in the offer (supported: {', '.join(supported)})",
            )
    return description


class WhipEndpoint:
    """WHIP routes and the registry of live WHIP sessions."""

    def __init__(
        self,
        streams: LiveStreams,
        stream_exists: Callable[[str], Awaitable[bool]],
        settings: WhipSettings,
        on_tag: TagSink | None = None,
    ) -> None:
        self.streams = streams
        self.on_tag = on_tag
        self.stream_exists = stream_exists
        self.settings = settings
        self.sessions: dict[str, WhipSession] = {}
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("OPTIONS", "/whip/{stream_id}", self.options)
        app.router.add_post("/whip/{stream_id}", self.post)
        app.router.add_route("OPTIONS", "/whip/{stream_id}/{session_id}", self.options)
        app.router.add_patch("/whip/{stream_id}/{session_id}", self.patch)
        app.router.add_delete("/whip/{stream_id}/{session_id}", self.delete)
        app.router.add_get("/publish/{stream_id}", self.page)
        app.router.add_get("/whip-static/publish.js", self.script)

    # --- handlers -------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        on_session = "session_id" in request.match_info
        methods = "PATCH, DELETE, OPTIONS" if on_session else "POST, OPTIONS"
        headers = {
            **_CORS,
            "Allow": methods,
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Max-Age": "86400",
        }
        headers["Accept-Patch" if on_session else "Accept-Post"] = TRICKLE if on_session else SDP
        return web.Response(status=204, headers=headers)

    async def post(self, request: web.Request) -> web.Response:
        if not self.limiter.allow(request.remote or "?"):
            return _error(429, "too many requests", {"Retry-After": "1"})
        stream_id = request.match_info["stream_id"]
        if not await self.stream_exists(stream_id):
            return _error(404, "no such stream")
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        bearer = {"WWW-Authenticate": 'Bearer realm="whip"'}
        if scheme.lower() != "bearer" or not key.strip():
            return _error(401, "stream key required: Authorization: Bearer <stream key>", bearer)
        try:
            target: str | None = await self.streams.resolve(key.strip())
        except PublishRefused:
            target = None
        if target is None or split_target(target)[0] != stream_id:
            return _error(401, "invalid stream key", bearer)
        if request.content_type != SDP:
            return _error(415, f"Content-Type must be {SDP}", {"Accept-Post": SDP})
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, "offer too large")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _error(413, "offer too large")
        try:
            offer = body.decode("utf-8")
            description = check_offer(offer)
        except UnicodeDecodeError:
            return _error(400, "the offer is not UTF-8")
        except OfferError as exc:
            return _error(exc.status, exc.message)
        if len(self.sessions) >= self.settings.max_sessions:
            return _error(503, "WHIP sessions at capacity", {"Retry-After": _RETRY_AFTER})
        peer = f"{request.remote}:{_peer_port(request)}"
        session = WhipSession(stream_id, peer, self.settings, self._session_closed, self.on_tag)
        session.remote_ufrag = next(m.ice.usernameFragment for m in description.media if m.ice)
        self.sessions[session.id] = session  # counts against capacity while negotiating
        try:
            await self.streams.admit(target, session)
            kinds = frozenset(m.kind for m in description.media if m.kind in ("audio", "video"))
            answer = await session.negotiate(offer, kinds)
            if session.closed:
                raise OfferError(503, "session closed while negotiating")
            live = self.streams.open(target, session)
        except PublishRefused as exc:
            await session.close(f"refused: {exc.detail}")
            return _error(REFUSAL_STATUS[exc.reason], exc.detail)
        except OfferError as exc:
            await session.close(exc.message)
            return _error(exc.status, exc.message)
        except PortRangeExhausted as exc:
            await session.close(str(exc))
            return _error(503, "no free UDP port for media", {"Retry-After": _RETRY_AFTER})
        except BaseException:
            await asyncio.shield(session.close("negotiation failed"))
            raise
        session.attach(live)
        headers = {
            **_CORS,
            "Location": session.path,
            "ETag": session.etag,
            "Accept-Patch": TRICKLE,
            "Content-Type": SDP,
        }
        links = [f'<{u}>; rel="ice-server"' for u in self.settings.ice_servers]
        if links:
            headers["Link"] = ", ".join(links)
        return web.Response(status=201, body=answer.encode(), headers=headers)

    async def patch(self, request: web.Request) -> web.Response:
        if not self.limiter.allow(request.remote or "?"):
            return _error(429, "too many requests", {"Retry-After": "1"})
        session = self._find(request)
        if session is None:
            return _error(404, "no such session")
        if request.content_type != TRICKLE:
            return _error(415, f"Content-Type must be {TRICKLE}", {"Accept-Patch": TRICKLE})
        match = request.headers.get("If-Match")
        if match is not None and match != "*" and match != session.etag:
            return _error(412, "ETag does not match this session")
        fragment = (await request.content.read(MAX_BODY)).decode("utf-8", "replace")
        ufrag = next(
            (ln.strip()[12:] for ln in fragment.splitlines() if ln.startswith("a=ice-ufrag:")),
            None,
        )
        if match == "*" or (ufrag is not None and ufrag != session.remote_ufrag):
            # RFC 9725 §4.3.1: a server with trickle but without ICE restarts answers 422.
            return _error(422, "ICE restarts are not supported")
        try:
            await session.add_candidates(fragment)
        except (ValueError, IndexError) as exc:
            return _error(400, f"bad candidate: {exc}")
        return web.Response(status=204, headers=_CORS)

    async def delete(self, request: web.Request) -> web.Response:
        if not self.limiter.allow(request.remote or "?"):
            return _error(429, "too many requests", {"Retry-After": "1"})
        session = self._find(request)
        if session is None:
            return _error(404, "no such session")
        await session.schedule_close("publisher sent DELETE")
        return web.Response(status=200, headers=_CORS)

    async def page(self, request: web.Request) -> web.Response:
        stream_id = request.match_info["stream_id"]
        if not await self.stream_exists(stream_id):  # store ids are safe to put into the HTML
            raise web.HTTPNotFound(text="no such stream")
        html = (STATIC / "publish.html").read_text().replace("{stream_id}", stream_id)
        return web.Response(
            text=html,
            content_type="text/html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    async def script(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC / "publish.js",
            headers={
                "Cache-Control": "no-cache",
                "Content-Type": "application/javascript; charset=utf-8",
            },
        )

    # --- registry -------------------------------------------------------------------------

    def _find(self, request: web.Request) -> WhipSession | None:
        session = self.sessions.get(request.match_info["session_id"])
        if session is None or session.stream_id != request.match_info["stream_id"]:
            return None
        return session

    def _session_closed(self, session: WhipSession, error: str | None) -> None:
        self.sessions.pop(session.id, None)
        if session.live is not None:
            # DELETE, a track the publisher ended, a shutdown: on purpose; ICE/DTLS loss: a drop.
            self.streams.end(session.live, error, clean=error is None)

    async def close(self, reason: str = "server shutting down") -> None:
        """End every WHIP session and wait until their peer connections are closed."""
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.schedule_close(reason) for s in sessions), return_exceptions=True)


def _peer_port(request: web.Request) -> int:
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    return int(peername[1]) if peername else 0
