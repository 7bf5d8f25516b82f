"""A shop's own page on the viewer module (``/static/shopcast-player.js``) with hls.js or Shaka
Player, as the README shows it: for the e2e tests and the latency benchmark.

The page is served to the browser by Playwright (a route on the origin's address, so the module
loads from the origin like any shop's page would). It logs every module event in
``window.log.events`` (tag, tagend, tagpassed; with the barcode probe's reading of the frame on
screen when ``window.shopcast.probe`` is there, see tests/e2e/barcode.py), latency readings in
``window.log.latency``, ``waiting`` events in ``window.log.stalls`` and hls.js's own stall
reports in ``window.log.hlsStalls``, and keeps the module in ``window.viewer``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

PATH = "/viewer-test.html"
ENGINES = ("hls.js", "shaka")

#: Low latency on both; ``hls.js`` catches up with its own catch-up (up to 1.5× speed).
#: Two more hls.js set-ups for the latency benchmark: ``shop`` plays with the live shop page's
#: own settings and catch-up (``LIVE_HLS_CONFIG``, ``followLiveEdge`` in page.js),
#: ``hls.js-default`` as a viewer app's developer drops it in (``new Hls({lowLatencyMode: true})``).
PAGE = """<!doctype html>
<meta charset="utf-8">
<video id="video" muted autoplay playsinline width="180" height="320"></video>
<script src="/static/hls.min.js"></script>
<script src="/static/shaka-player.hls.js"></script>
<script type="module">
  import { ShopcastPlayer } from "/static/shopcast-player.js";
  import { LIVE_HLS_CONFIG, followLiveEdge } from "/static/page.js";
  const params = new URLSearchParams(location.search);
  const video = document.getElementById("video");
  const log = (window.log = { events: [], latency: [], errors: [], stalls: 0, hlsStalls: 0 });
  video.addEventListener("waiting", () => { log.stalls += 1; });
  // Registered before the module's: runs first in each frame, so it knows the previous one.
  const frames = { current: null, previous: null };
  const onFrame = (now, m) => {
    frames.previous = frames.current;
    frames.current = m.mediaTime;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const hlsConfigs = {
    "hls.js": { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 },
    "hls.js-default": { lowLatencyMode: true },
    shop: LIVE_HLS_CONFIG,
  };
  const options = params.get("engine") === "shaka"
    ? { shaka: shaka.Player, config: { streaming: { lowLatencyMode: true } },
        loadAttempts: Number(params.get("attempts") || 1) }
    : { hls: Hls, config: hlsConfigs[params.get("engine")] };
  const viewer = (window.viewer = new ShopcastPlayer(video, params.get("src"), options));
  for (const type of ["tag", "tagend", "tagpassed"]) {
    viewer.addEventListener(type, (e) => {
      const rec = Object.assign({ type }, e.detail);
      const probe = window.shopcast && window.shopcast.probe;
      if (probe && e.detail.mediaTime !== undefined && e.detail.mediaTime !== null) {
        Object.assign(rec, probe(video));
        rec.previousMediaTime = frames.current === e.detail.mediaTime ? frames.previous : null;
      }
      log.events.push(rec);
    });
  }
  viewer.addEventListener("latency", (e) => log.latency.push(
    Object.assign({ at: performance.now(), height: video.videoHeight }, e.detail)));
  viewer.start()
    .then(() => {
      // hls.js's own stall reports: each raises its target latency by 1 s (lowLatencyMode).
      if (viewer.engine === "hls.js") {
        viewer.player.on(Hls.Events.ERROR, (_, d) => {
          if (d.details === "bufferStalledError") log.hlsStalls += 1;
        });
      }
    })
    .then(() => params.get("engine") === "shop" && followLiveEdge(viewer.player, video))
    .then(() => video.play())
    .catch((e) => log.errors.push(String(e && e.code ? e.code : e)));
</script>
"""


async def open_viewer(
    browser: Any, base: str, engine: str, src: str, init: str = "", attempts: int = 1
) -> Any:
    """A new page playing ``src`` (a path on ``base``) through the module on ``engine``;
    ``init`` is a script run before the page's own (e.g. the barcode probe), ``attempts`` the
    module's ``loadAttempts`` (Shaka)."""
    page = await browser.new_page(viewport={"width": 360, "height": 640})
    if init:
        await page.add_init_script(init)

    async def serve(route: Any) -> None:
        await route.fulfill(status=200, content_type="text/html", body=PAGE)

    await page.route(f"{base}{PATH}**", serve)
    query = urlencode({"engine": engine, "src": src, "attempts": attempts})
    await page.goto(f"{base}{PATH}?{query}")
    return page
