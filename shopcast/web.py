"""Pages the origin serves itself: the demo shop page and every asset it loads (no CDN)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from shopcast.store import STREAM_ID_RE

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
#: hls.js (npm, pinned in package.json) as the build copies it into the package (see setup.py).
HLS_JS = STATIC / "vendor" / "hls.min.js"
#: Shaka Player's HLS build (npm, pinned in package.json), vendored the same way: for viewer
#: apps built on Shaka (and their tests).
SHAKA_JS = STATIC / "vendor" / "shaka-player.hls.js"
SHOP = STATIC / "shop.html"
#: The shop page's own assets (a fixed list: nothing else under static/ is served).
ASSETS = {
    "shop.js": "application/javascript",
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
    app.router.add_get("/static/hls.min.js", hls_js)
    app.router.add_get("/static/shaka-player.hls.js", shaka_js)
    app.router.add_get("/static/{name}", asset)
