"""Pages the origin serves itself: the demo player and the front-end assets it loads."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from shopcast.store import STREAM_ID_RE

ROOT = Path(__file__).resolve().parent
#: hls.js comes from npm (``make`` installs it into the repository's node_modules).
HLS_JS = ROOT.parent / "node_modules" / "hls.js" / "dist" / "hls.min.js"
PLAYER = ROOT / "static" / "player.html"


async def demo_page(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    if not STREAM_ID_RE.match(stream_id):
        raise web.HTTPNotFound(text="no such stream")
    html = PLAYER.read_text().replace("{stream_id}", stream_id)
    return web.Response(text=html, content_type="text/html")


async def hls_js(request: web.Request) -> web.StreamResponse:
    if not HLS_JS.exists():
        raise web.HTTPNotFound(text="hls.js is not installed: run `make run` (npm install)")
    return web.FileResponse(HLS_JS, headers={"Cache-Control": "public, max-age=3600"})


def add_web_routes(app: web.Application) -> None:
    app.router.add_get("/demo/{stream_id}", demo_page)
    app.router.add_get("/static/hls.min.js", hls_js)
