"""Pages the origin serves itself: the live shop page, the replay page of a recording, and every
asset they load (no CDN)."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from packager import access
from packager.origin import SECRET_KEY, recording_elsewhere
from packager.recorder import RECORDING_ID_RE
from packager.stores import StoreUnavailable
from shopcast.api import RECORDINGS_KEY, STORE_KEY, public_tag
from shopcast.store import STREAM_ID_RE, RecordingRecord, TagRecord

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
#: hls.js (npm, pinned in package.json) as the build copies it into the package (see setup.py).
HLS_JS = STATIC / "vendor" / "hls.min.js"
#: Shaka Player's HLS build (npm, pinned in package.json), vendored the same way: for viewer
#: apps built on Shaka (and their tests).
SHAKA_JS = STATIC / "vendor" / "shaka-player.hls.js"
SHOP = STATIC / "shop.html"
REPLAY = STATIC / "replay.html"
#: The shop pages' own assets (a fixed list: nothing else under static/ is served).
ASSETS = {
    #: The viewer module for shops' own apps (ES module; its types beside it), see the README.
    "shopcast-player.js": "application/javascript",
    "shopcast-player.d.ts": "application/typescript",
    "cards.js": "application/javascript",
    "page.js": "application/javascript",
    "shop.js": "application/javascript",
    "replay.js": "application/javascript",
    "shop.css": "text/css",
}
#: Everything the page loads comes from this origin; hls.js runs its transmuxer in a blob:
#: worker and feeds the video element through MediaSource (blob: URL). Merchant images in tag
#: data may live elsewhere, so images may come from https: too. 'unsafe-eval' only because
#: browser automation (Playwright's wait_for_function/evaluate of strings) needs it; the page
#: itself never evaluates strings.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; "
    "img-src 'self' data: https:; "
    "media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


async def demo_page(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    if not STREAM_ID_RE.match(stream_id):  # also what makes the id safe to put into the HTML
        raise web.HTTPNotFound(text="no such stream")
    html = SHOP.read_text().replace("{stream_id}", stream_id)
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


async def _replay_show(request: web.Request) -> tuple[RecordingRecord, list[TagRecord]]:
    """A playable recording and the tags its VOD playlists carry; HTTP 404/503 otherwise."""
    recordings = request.app[RECORDINGS_KEY]
    recording_id = request.match_info["recording_id"]
    row = await recordings.get(recording_id)  # None unless the id has the recorder's shape
    try:
        vod = await recordings.vod(recording_id) if row is not None else None
    except StoreUnavailable as exc:
        raise web.HTTPServiceUnavailable(
            text=f"the recordings store is unavailable: {exc}"
        ) from exc
    if row is None or vod is None:
        raise web.HTTPNotFound(text="no such recording")
    in_vod = {tag.id for tag in vod.tags}
    tags = await request.app[STORE_KEY].list_tags(row.stream_id)
    return row, [t for t in tags if t.id in in_vod]


async def replay_page(request: web.Request) -> web.Response:
    """The replay shop page of a recording: ``/vod/<id>/`` with cards and chapters."""
    elsewhere = await recording_elsewhere(request, request.match_info["recording_id"])
    if elsewhere is not None:
        return elsewhere  # the page and its /vod from one node (its CSP is 'self')
    row, _ = await _replay_show(request)
    # Only ids of their strict shapes go into the HTML (no escaping needed, none possible).
    if not (RECORDING_ID_RE.match(row.id) and STREAM_ID_RE.match(row.stream_id)):
        raise web.HTTPNotFound(text="no such recording")
    html = REPLAY.read_text().replace("{stream_id}", row.stream_id)
    html = html.replace("{recording_id}", row.id)
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


async def replay_data(request: web.Request) -> web.Response:
    """What the replay page needs besides the VOD: the show's tags as anyone may see them
    (``PUBLIC_TAG_FIELDS``). Behind the recording's playback token when playback needs one."""
    secret = request.app[SECRET_KEY]
    if secret:
        token = request.query.get(access.TOKEN_PARAM)
        why = access.verify(secret, request.path, token, time.time())
        if why is not None:
            raise web.HTTPForbidden(text=why)
    elsewhere = await recording_elsewhere(request, request.match_info["recording_id"])
    if elsewhere is not None:
        return elsewhere
    row, tags = await _replay_show(request)
    body = {
        "recording_id": row.id,
        "stream_id": row.stream_id,
        "tags": [public_tag(request, t) for t in tags],
    }
    # Tags posted with "at" after the show join the recording: never stale.
    return web.json_response(body, headers={"Cache-Control": "no-cache"})


async def hls_js(request: web.Request) -> web.StreamResponse:
    if not HLS_JS.exists():
        raise web.HTTPNotFound(text="hls.js is not in the package: run `make install`")
    return web.FileResponse(HLS_JS, headers={"Cache-Control": "public, max-age=3600"})


async def shaka_js(request: web.Request) -> web.StreamResponse:
    if not SHAKA_JS.exists():
        raise web.HTTPNotFound(text="Shaka Player is not in the package: run `make install`")
    return web.FileResponse(
        SHAKA_JS,
        headers={
            "Cache-Control": "public, max-age=3600",
            "Content-Type": "application/javascript; charset=utf-8",
        },
    )


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text="no such asset")
    return web.FileResponse(
        STATIC / name,
        headers={"Cache-Control": "no-cache", "Content-Type": f"{content_type}; charset=utf-8"},
    )


def add_web_routes(app: web.Application) -> None:
    app.router.add_get("/demo/{stream_id}", demo_page)
    if RECORDINGS_KEY in app:
        app.router.add_get("/replay/{recording_id}", replay_page)
        app.router.add_get("/replay/{recording_id}/data.json", replay_data)
    app.router.add_get("/static/hls.min.js", hls_js)
    app.router.add_get("/static/shaka-player.hls.js", shaka_js)
    app.router.add_get("/static/{name}", asset)
