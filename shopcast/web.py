"""Pages the origin serves itself: the demo shop page and every asset it loads (no CDN)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from shopcast.store import STREAM_ID_RE

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
#: hls.js comes from npm (``make`` installs it into the repository's node_modules).
HLS_JS = ROOT.parent / "node_modules" / "hls.js" / "dist" / "hls.min.js"
SHOP = STATIC / "shop.html"
#: The shop pages' own assets (a fixed list: nothing else under static/ is served).
ASSETS = {
    "cues.js": "application/javascript",
    "cards.js": "application/javascript",
    "player.js": "application/javascript",
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
        raise web.HTTPNotFound(text="hls.js is not installed: run `make run` (npm install)")
    return web.FileResponse(HLS_JS, headers={"Cache-Control": "public, max-age=3600"})


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
    app.router.add_get("/static/{name}", asset)
