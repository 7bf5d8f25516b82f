"""Origin HTTP for ``/hls/<stream_id>/…``: blocking playlist reload, hinted parts, caching rules."""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from aiohttp import web

from packager import access
from packager.blocking import BadReloadRequest, parse_reload
from packager.live import LivePackage
from packager.posters import PosterCache
from packager.rendition import RenditionOutput
from packager.stores import RecordingStore, StoreUnavailable
from packager.tags import Tag
from packager.vod import Manifest, render_vod_media_playlist, render_vod_multivariant_playlist

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PackageLookup = Callable[[str], LivePackage | None]
LOOKUP_KEY: web.AppKey[PackageLookup] = web.AppKey("hls_packages")
SECRET_KEY: web.AppKey[str] = web.AppKey("hls_playback_secret")
POSTERS_KEY = web.AppKey("hls_posters", PosterCache)


class ThumbnailSource(Protocol):
    """Where tag thumbnails come from (``shopcast.thumbnails.Thumbnails``)."""

    async def get(self, stream_id: str, tag_id: str) -> bytes | None:
        """JPEG of the tag's frame, or None when there is no such tag or no media holds it."""

    async def recording_poster(self, recording_id: str) -> bytes | None:
        """JPEG of a recording's cover frame, or None when there is no such recording."""


THUMBNAILS_KEY: web.AppKey[ThumbnailSource] = web.AppKey("hls_thumbnails")


class StreamOwners(Protocol):
    """Which origin of a cluster owns a live stream (``shopcast.cluster.routing``)."""

    def holds(self, stream_id: str) -> bool:
        """Whether this origin owns the stream now (from memory: asked on every request)."""

    async def owner_url(self, stream_id: str, max_age: float = 1.0) -> str | None:
        """Base URL of the *other* live origin owning the stream, as known at most ``max_age``
        seconds ago; None when this origin or nobody owns it (or the database is away)."""


OWNERS_KEY: web.AppKey[StreamOwners] = web.AppKey("hls_owners")


class RecordingHomes(Protocol):
    """Which node of a cluster serves a recording (``shopcast.cluster.routing``)."""

    async def home_url(self, recording_id: str) -> str | None:
        """Base URL of the *other* node whose recordings store alone holds the recording (a
        file store); None to serve it here. ``StoreUnavailable`` when that node is down."""


HOMES_KEY: web.AppKey[RecordingHomes] = web.AppKey("vod_homes")
#: How long a redirect to a stream's owner may be reused (a move is followed within it).
MOVED_CACHE = "public, max-age=1"
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


async def _moved(request: web.Request, max_age: float = 1.0) -> web.Response | None:
    """307 to the owner when another origin of the cluster owns the stream, with the same path
    and query (blocking reload parameters, token), so any CDN or edge in front of any origin
    reaches the show; None to answer here."""
    owners = request.app.get(OWNERS_KEY)
    if owners is None:
        return None
    stream_id = request.match_info["stream"]
    if owners.holds(stream_id):
        return None
    base = await owners.owner_url(stream_id, max_age)
    return None if base is None else _redirect(request, base, "the stream is served by its owner")


def _redirect(request: web.Request, base: str, why: str) -> web.Response:
    """The one redirect to another node of the cluster: same path and query there."""
    return web.Response(
        status=307,
        text=why + "\n",
        headers={**CORS, "Location": base + request.path_qs, "Cache-Control": MOVED_CACHE},
    )


async def recording_elsewhere(request: web.Request, recording_id: str) -> web.Response | None:
    """307 to the node holding the recording when only that node can serve it (file store), a
    503 with the reason when it is down; None to answer here (``/vod``, replay pages)."""
    homes = request.app.get(HOMES_KEY)
    if homes is None:
        return None
    try:
        base = await homes.home_url(recording_id)
    except StoreUnavailable as exc:
        return _error(503, f"the recordings store is unavailable: {exc}")
    return None if base is None else _redirect(request, base, "the recording is on its node")


async def multivariant(request: web.Request) -> web.StreamResponse:
    if (denied := _denied(request)) is not None:
        return denied
    if (moved := await _moved(request)) is not None:
        return moved
    package = _package(request)
    if package is None:
        return _error(404, "no such live stream")
    if not await _ladder(package):
        return _error(503, "the stream's renditions are not ready yet")
    resp = web.Response(
        text=_playlist(request, package.multivariant()),
        content_type=PLAYLIST_TYPE,
        headers={**CORS, "Cache-Control": _cache(Fraction(package.config.target_duration, 2))},
    )
    resp.enable_compression()
    return resp


async def _ladder(package: LivePackage) -> bool:
    """Whether the playlists can be served (the renditions are known; a show continued from
    another origin lists a whole segment), waiting up to 3 target durations: a player (or an
    edge following a show to its new origin) that arrives with the first GOP waits instead of
    failing."""
    if not package.playlists_ready.is_set():
        try:
            await asyncio.wait_for(
                package.playlists_ready.wait(), 3 * package.config.target_duration
            )
        except TimeoutError:
            return False
    return True


async def _rendition(request: web.Request) -> RenditionOutput | None:
    package = _package(request)
    if package is None or not await _ladder(package):
        return None
    return package.renditions.get(request.match_info["rendition"])


async def media_playlist(request: web.Request) -> web.StreamResponse:
    if (denied := _denied(request)) is not None:
        return denied
    if (moved := await _moved(request)) is not None:
        return moved
    rendition = await _rendition(request)
    if rendition is None:
        return _error(404, "no such rendition")
    state = rendition.state
    td = state.target_duration
    try:
        reload = parse_reload(request.query, state, rendition.config.segment_duration)
    except BadReloadRequest as exc:
        return _error(400, str(exc), td)
    msn, part = reload.msn, reload.part
    if reload.blocking and msn is not None:
        ready = await rendition.wait_until(lambda: rendition.has(msn, part), 3 * td)
        # Held while the show moved to another origin (this one lost the lease and ended its
        # copy): the request goes there, not to an ENDLIST a cache would keep for 6 TDs.
        if (moved := await _moved(request, max_age=0.0)) is not None:
            return moved
        if not ready:
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
    if (moved := await _moved(request)) is not None:
        return moved
    rendition = await _rendition(request)
    if rendition is None:
        return _error(404, "no such rendition")
    name = request.match_info["file"]
    td = rendition.state.target_duration
    data = rendition.files.get(name)
    if data is None and rendition.hinted(name):
        # S 6.2.6: a hinted part is requestable at once; hold the request until it exists.
        await rendition.wait_until(lambda: name in rendition.files, 3 * td)
        data = rendition.files.get(name)
        if data is None and (moved := await _moved(request, max_age=0.0)) is not None:
            return moved  # the show moved to another origin meanwhile
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
    if (moved := await _moved(request)) is not None:
        return moved
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
    if (moved := await _moved(request)) is not None:
        return moved
    tag_id = request.match_info["tag"]
    if not _TAG_ID.match(tag_id):
        return _error(404, "no such tag")
    try:
        jpeg = await request.app[THUMBNAILS_KEY].get(request.match_info["stream"], tag_id)
    except StoreUnavailable as exc:
        return _error(503, f"the recordings store is unavailable: {exc}")
    if jpeg is None:
        return _error(404, "no such tag, or its frame is no longer held")
    return web.Response(
        body=jpeg,
        content_type="image/jpeg",
        headers={**CORS, "Cache-Control": _cache(24 * 3600)},  # a tag's frame never changes
    )


async def recording_poster(request: web.Request) -> web.StreamResponse:
    """JPEG cover of a recording (its first product moment)."""
    if (denied := _denied(request)) is not None:
        return denied
    elsewhere = await recording_elsewhere(request, request.match_info["recording"])
    if elsewhere is not None:
        return elsewhere
    try:
        jpeg = await request.app[THUMBNAILS_KEY].recording_poster(request.match_info["recording"])
    except StoreUnavailable as exc:
        return _error(503, f"the recordings store is unavailable: {exc}")
    if jpeg is None:
        return _error(404, "no such recording")
    return web.Response(
        body=jpeg, content_type="image/jpeg", headers={**CORS, "Cache-Control": _cache(3600)}
    )


def add_picture_routes(app: web.Application, source: ThumbnailSource) -> None:
    """Mount ``/hls/<stream_id>/tags/<tag_id>.jpg`` and ``/vod/<recording_id>/poster.jpg``
    (before :func:`add_hls_routes`, whose rendition route would take the first otherwise)."""
    app[THUMBNAILS_KEY] = source
    for path, handler in (
        ("/hls/{stream}/tags/{tag}.jpg", tag_thumbnail),
        ("/vod/{recording}/poster.jpg", recording_poster),
    ):
        app.router.add_get(path, handler)
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


def add_hls_routes(
    app: web.Application,
    lookup: PackageLookup,
    playback_secret: str = "",
    owners: StreamOwners | None = None,
) -> None:
    """Mount the origin's ``/hls`` routes on ``app``; a secret makes playback need tokens;
    ``owners`` (in a cluster) redirects requests for streams another origin owns."""
    app[LOOKUP_KEY] = lookup
    if owners is not None:
        app[OWNERS_KEY] = owners
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


# -- /vod: recordings ----------------------------------------------------------------------
#: A recorded file: an init segment (the show's, a slate's) or a segment by its number.
_VOD_FILE = re.compile(r"^(init\.mp4|slate-\d{1,19}\.mp4|\d{1,19}\.m4s)$")
#: Recorded segments never change; a year (RFC 8246 immutable) lets every cache keep them.
VOD_MEDIA_CACHE = "public, max-age=31536000, immutable"
#: A finished recording's playlists change only if it is deleted.
VOD_READY_PLAYLIST_SECONDS = 24 * 3600
#: Rendered VOD playlists kept (a 2-hour show's is ~250 kB and takes ~20 ms to render).
VOD_PLAYLIST_CACHE = 64
#: Playlists with more segments than this render on a worker thread, not on the loop.
VOD_RENDER_INLINE = 300


@dataclass(frozen=True)
class VodRecording:
    """What ``/vod/<id>/…`` serves: the manifest, the show's tags, whether it has ended."""

    manifest: Manifest
    tags: list[Tag]
    ended: bool


class VodSource(Protocol):
    async def vod(self, recording_id: str) -> VodRecording | None:
        """The recording, or None when there is no such (playable) recording."""


VOD_SOURCE_KEY: web.AppKey[VodSource] = web.AppKey("vod_source")
VOD_STORE_KEY: web.AppKey[RecordingStore] = web.AppKey("vod_store")
VodCache = collections.OrderedDict[tuple[object, ...], str]
VOD_CACHE_KEY: web.AppKey[VodCache] = web.AppKey("vod_playlists")


def _vod_playlist(request: web.Request, rec: VodRecording, text: str) -> web.Response:
    td = rec.manifest.target_duration
    # S Appendix B: a growing (EVENT) playlist half a target duration, like live.
    seconds = VOD_READY_PLAYLIST_SECONDS if rec.ended else Fraction(td, 2)
    resp = web.Response(
        text=_playlist(request, text),
        content_type=PLAYLIST_TYPE,
        headers={**CORS, "Cache-Control": _cache(seconds)},
    )
    resp.enable_compression()
    return resp


async def _vod(request: web.Request) -> VodRecording | web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    elsewhere = await recording_elsewhere(request, request.match_info["recording"])
    if elsewhere is not None:
        return elsewhere
    try:
        rec = await request.app[VOD_SOURCE_KEY].vod(request.match_info["recording"])
    except StoreUnavailable as exc:
        return _error(503, f"the recordings store is unavailable: {exc}")
    return _error(404, "no such recording") if rec is None else rec


async def vod_multivariant(request: web.Request) -> web.StreamResponse:
    rec = await _vod(request)
    if isinstance(rec, web.Response):
        return rec
    return _vod_playlist(request, rec, render_vod_multivariant_playlist(rec.manifest))


async def vod_media_playlist(request: web.Request) -> web.StreamResponse:
    rec = await _vod(request)
    if isinstance(rec, web.Response):
        return rec
    rendition = rec.manifest.rendition(request.match_info["rendition"])
    if rendition is None:
        return _error(404, "no such rendition")
    cache = request.app[VOD_CACHE_KEY]
    key = (
        rec.manifest.id,
        rendition.name,
        rec.ended,
        len(rendition.segments),
        tuple(t.id for t in rec.tags),
    )
    text = cache.get(key)
    if text is None:
        render = (rec.manifest, rendition, rec.tags)
        if len(rendition.segments) > VOD_RENDER_INLINE:
            text = await asyncio.to_thread(render_vod_media_playlist, *render, ended=rec.ended)
        else:
            text = render_vod_media_playlist(*render, ended=rec.ended)
        cache[key] = text
        if len(cache) > VOD_PLAYLIST_CACHE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return _vod_playlist(request, rec, text)


async def vod_file(request: web.Request) -> web.StreamResponse:
    rec = await _vod(request)
    if isinstance(rec, web.Response):
        return rec
    rendition = rec.manifest.rendition(request.match_info["rendition"])
    name = request.match_info["file"]
    if rendition is None or not _VOD_FILE.match(name):
        return _error(404, "no such rendition or file")
    # The key comes from the manifest's own names; the request only picked among them.
    try:
        data = await request.app[VOD_STORE_KEY].get(f"{rec.manifest.id}/{rendition.name}/{name}")
    except StoreUnavailable as exc:
        return _error(503, f"the recordings store is unavailable: {exc}")
    if data is None:
        return _error(404, "no such segment")
    return web.Response(
        body=data,
        content_type="video/mp4" if name.endswith(".mp4") else "video/iso.segment",
        headers={**CORS, "Cache-Control": VOD_MEDIA_CACHE},
    )


def add_vod_routes(
    app: web.Application,
    source: VodSource,
    store: RecordingStore,
    homes: RecordingHomes | None = None,
) -> None:
    """Mount ``/vod/<recording_id>/…`` (after :func:`add_hls_routes`: same playback secret);
    ``homes`` (in a cluster) redirects recordings only another node holds."""
    app[VOD_SOURCE_KEY] = source
    if homes is not None:
        app[HOMES_KEY] = homes
    app[VOD_STORE_KEY] = store
    app[VOD_CACHE_KEY] = collections.OrderedDict()
    for path, handler in (
        ("/vod/{recording}/master.m3u8", vod_multivariant),
        ("/vod/{recording}/{rendition}/index.m3u8", vod_media_playlist),
        ("/vod/{recording}/{rendition}/{file}", vod_file),
    ):
        app.router.add_get(path, handler)
        app.router.add_route("OPTIONS", path, preflight)
