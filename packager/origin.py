"""Origin HTTP for ``/hls/<stream_id>/…``: blocking playlist reload, hinted parts, caching rules."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Protocol

from aiohttp import web

from packager import access
from packager.blocking import BadReloadRequest, parse_reload
from packager.live import LivePackage
from packager.posters import PosterCache
from packager.rendition import RenditionOutput

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PackageLookup = Callable[[str], LivePackage | None]
LOOKUP_KEY: web.AppKey[PackageLookup] = web.AppKey("hls_packages")
SECRET_KEY: web.AppKey[str] = web.AppKey("hls_playback_secret")
POSTERS_KEY = web.AppKey("hls_posters", PosterCache)


class ThumbnailSource(Protocol):
    """Where tag thumbnails come from (``shopcast.thumbnails.Thumbnails``)."""

    async def get(self, stream_id: str, tag_id: str) -> bytes | None:
        """JPEG of the tag's frame, or None when there is no such tag or no media holds it."""


THUMBNAILS_KEY: web.AppKey[ThumbnailSource] = web.AppKey("hls_thumbnails")
#: Tag ids as the tag service makes them (bounded before any lookup).
_TAG_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
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


async def poster(request: web.Request) -> web.StreamResponse:
    """The latest keyframe of the top rung as a JPEG (decoded once per segment)."""
    if (denied := _denied(request)) is not None:
        return denied
    stream_id = request.match_info["stream"]
    package = _package(request)
    posters = request.app[POSTERS_KEY]
    if package is None or package.ended:
        posters.forget(stream_id)
        return _error(404, "the stream is not live")
    jpeg = await posters.get(stream_id, package)
    if jpeg is None:
        return _error(404, "no keyframe yet", package.config.target_duration)
    # A new poster comes with every segment: cached for half a target duration, like playlists.
    return web.Response(
        body=jpeg,
        content_type="image/jpeg",
        headers={**CORS, "Cache-Control": _cache(Fraction(package.config.target_duration, 2))},
    )


async def tag_thumbnail(request: web.Request) -> web.StreamResponse:
    """JPEG of a tag's frame (``thumbnail_url`` of every tag)."""
    if (denied := _denied(request)) is not None:
        return denied
    tag_id = request.match_info["tag"]
    if not _TAG_ID.match(tag_id):
        return _error(404, "no such tag")
    jpeg = await request.app[THUMBNAILS_KEY].get(request.match_info["stream"], tag_id)
    if jpeg is None:
        return _error(404, "no such tag, or its frame is no longer held")
    return web.Response(
        body=jpeg,
        content_type="image/jpeg",
        headers={**CORS, "Cache-Control": _cache(24 * 3600)},  # a tag's frame never changes
    )


def add_thumbnail_route(app: web.Application, source: ThumbnailSource) -> None:
    """Mount ``/hls/<stream_id>/tags/<tag_id>.jpg`` (before :func:`add_hls_routes`, whose
    rendition route would take the path otherwise)."""
    app[THUMBNAILS_KEY] = source
    path = "/hls/{stream}/tags/{tag}.jpg"
    app.router.add_get(path, tag_thumbnail)
    app.router.add_route("OPTIONS", path, preflight)


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
    app[POSTERS_KEY] = PosterCache()
    for path, handler in (
        ("/hls/{stream}/master.m3u8", multivariant),
        ("/hls/{stream}/poster.jpg", poster),
        ("/hls/{stream}/{rendition}/index.m3u8", media_playlist),
        ("/hls/{stream}/{rendition}/{file}", media_file),
    ):
        app.router.add_get(path, handler)
        app.router.add_route("OPTIONS", path, preflight)
