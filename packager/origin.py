"""Origin HTTP for ``/hls/<stream_id>/…``: blocking playlist reload, hinted parts, caching rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from fractions import Fraction

from aiohttp import web

from packager import access
from packager.blocking import BadReloadRequest, parse_reload
from packager.live import LivePackage
from packager.rendition import RenditionOutput

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PackageLookup = Callable[[str], LivePackage | None]
LOOKUP_KEY: web.AppKey[PackageLookup] = web.AppKey("hls_packages")
SECRET_KEY: web.AppKey[str] = web.AppKey("hls_playback_secret")
CORS = {
    "Access-Control-Allow-Origin": "*",
    # hls.js reads Age to correct its latency estimate (LLHLS_RULES "Caching").
    "Access-Control-Expose-Headers": "Age",
}


def _cache(seconds: float | Fraction, immutable: bool = False) -> str:
    value = f"public, max-age={max(int(seconds), 1)}"
    return value + ", immutable" if immutable else value


def _error(status: int, message: str, target_duration: int = 1) -> web.Response:
    # S Appendix B: errors cacheable for at most one target duration.
    return web.Response(
        status=status,
        text=message + "\n",
        headers={**CORS, "Cache-Control": _cache(target_duration)},
    )


def _denied(request: web.Request) -> web.Response | None:
    """403 unless playback is open or the request carries a valid token for its stream."""
    secret = request.app[SECRET_KEY]
    if not secret:
        return None
    why = access.verify(secret, request.path, request.query.get(access.TOKEN_PARAM), time.time())
    return None if why is None else _error(403, why)


def _playlist(request: web.Request, text: str) -> str:
    token = request.query.get(access.TOKEN_PARAM) if request.app[SECRET_KEY] else None
    return access.carry_token(text, token) if token else text


def _package(request: web.Request) -> LivePackage | None:
    return request.app[LOOKUP_KEY](request.match_info["stream"])


async def multivariant(request: web.Request) -> web.StreamResponse:
    if (denied := _denied(request)) is not None:
        return denied
    package = _package(request)
    if package is None:
        return _error(404, "no such live stream")
    wait = 3 * package.config.target_duration
    if not package.ladder_ready.is_set():
        # A player that arrives with the first GOP waits for the ladder instead of failing.
        try:
            await asyncio.wait_for(package.ladder_ready.wait(), wait)
        except TimeoutError:
            return _error(503, "the stream's renditions are not ready yet")
    resp = web.Response(
        text=_playlist(request, package.multivariant()),
        content_type=PLAYLIST_TYPE,
        headers={**CORS, "Cache-Control": _cache(Fraction(package.config.target_duration, 2))},
    )
    resp.enable_compression()
    return resp


def _rendition(request: web.Request) -> RenditionOutput | None:
    package = _package(request)
    if package is None:
        return None
    return package.renditions.get(request.match_info["rendition"])


async def media_playlist(request: web.Request) -> web.StreamResponse:
    if (denied := _denied(request)) is not None:
        return denied
    rendition = _rendition(request)
    if rendition is None:
        return _error(404, "no such rendition")
    state = rendition.state
    td = state.target_duration
    try:
        reload = parse_reload(request.query, state, rendition.config.segment_duration)
    except BadReloadRequest as exc:
        return _error(400, str(exc), td)
    msn, part = reload.msn, reload.part
    if (
        reload.blocking
        and msn is not None
        and not await rendition.wait_until(lambda: rendition.has(msn, part), 3 * td)
    ):
        # S 6.2.5.2: not satisfiable within three target durations.
        return _error(503, "the requested part did not appear in time", td)
    # Delta updates only when the playlist offers them (it always sets CAN-SKIP-UNTIL).
    resp = web.Response(
        text=_playlist(request, rendition.playlist(skip=reload.skip)),
        content_type=PLAYLIST_TYPE,
        headers={
            **CORS,
            # S Appendix B: blocking responses 6 target durations, plain ones half of one.
            "Cache-Control": _cache(6 * td) if msn is not None else _cache(Fraction(td, 2)),
        },
    )
    resp.enable_compression()
    return resp


async def media_file(request: web.Request) -> web.StreamResponse:
    if (denied := _denied(request)) is not None:
        return denied
    rendition = _rendition(request)
    if rendition is None:
        return _error(404, "no such rendition")
    name = request.match_info["file"]
    td = rendition.state.target_duration
    data = rendition.files.get(name)
    if data is None and rendition.hinted(name):
        # S 6.2.6: a hinted part is requestable at once; hold the request until it exists.
        await rendition.wait_until(lambda: name in rendition.files, 3 * td)
        data = rendition.files.get(name)
        if data is None:
            return _error(503, "the hinted part did not appear in time", td)
    if data is None:
        return _error(404, "no such part or segment", td)
    ctype = "video/mp4" if name.endswith(".mp4") else "video/iso.segment"
    return web.Response(
        body=data,
        content_type=ctype,
        headers={**CORS, "Cache-Control": _cache(24 * 3600, immutable=True)},
    )


async def preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": "*",
            "Access-Control-Max-Age": "86400",
        },
    )


def add_hls_routes(app: web.Application, lookup: PackageLookup, playback_secret: str = "") -> None:
    """Mount the origin's ``/hls`` routes on ``app``; a secret makes playback need tokens."""
    app[LOOKUP_KEY] = lookup
    app[SECRET_KEY] = playback_secret
    for path, handler in (
        ("/hls/{stream}/master.m3u8", multivariant),
        ("/hls/{stream}/{rendition}/index.m3u8", media_playlist),
        ("/hls/{stream}/{rendition}/{file}", media_file),
    ):
        app.router.add_get(path, handler)
        app.router.add_route("OPTIONS", path, preflight)
