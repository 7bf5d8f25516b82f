"""Origin HTTP behaviour at the handler level: blocking reload, hinted parts, caching, errors."""

from __future__ import annotations

import asyncio
import gzip
from fractions import Fraction

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from packager.live import LivePackage, PackagerConfig
from packager.origin import add_hls_routes

from .conftest import Feeder
from .m3u8 import parse
from .media import encode_audio, encode_video

# 1 s segments (IDR every 30 frames) keep the 503 case (3 target durations) quick.
CONFIG = PackagerConfig(segment_duration=Fraction(1))


@pytest.fixture(scope="module")
def media_1s_gop():
    return {"180p": encode_video("180p", 8, gop=30), "audio": encode_audio("audio", 8)}


@pytest.fixture
async def origin(media_1s_gop):
    package = LivePackage("shop", CONFIG)
    feed = Feeder(package, media_1s_gop)
    app = web.Application()
    add_hls_routes(app, lambda sid: package if sid == "shop" else None)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, feed
    await client.close()


def _last(feed: Feeder) -> tuple[int, int]:
    pos = feed.package.renditions["180p"].state.last_position
    assert pos is not None
    return pos


async def test_blocking_request_waits_for_the_part(origin) -> None:
    client, feed = origin
    feed.until(3)
    msn, part = _last(feed)
    nxt = f"_HLS_msn={msn}&_HLS_part={part + 1}"
    task = asyncio.ensure_future(client.get(f"/hls/shop/180p/index.m3u8?{nxt}"))
    await asyncio.sleep(0.5)
    assert not task.done()  # S 6.2.5.2: held until the part exists
    feed.until(3.4)  # the next part is cut
    resp = await asyncio.wait_for(task, 2)
    assert resp.status == 200
    pl = parse(await resp.text())
    uris = [p.attrs["URI"] for p in pl.tags("#EXT-X-PART")]
    assert f"{msn}.{part + 1}.m4s" in uris or any(u.startswith(f"{msn + 1}.0") for u in uris)
    # S Appendix B: a blocking response may be cached for 6 target durations.
    td = int(pl.one("#EXT-X-TARGETDURATION").value)
    assert resp.headers["Cache-Control"] == f"public, max-age={6 * td}"


async def test_part_past_the_last_means_next_segment(origin) -> None:
    client, feed = origin
    feed.until(2.05)  # a segment just completed
    state = feed.package.renditions["180p"].state
    done = [s for s in state.segments if s.complete][-1]
    # hls.js #5608: _HLS_part beyond the segment's last part = part 0 of the next segment.
    url = f"/hls/shop/180p/index.m3u8?_HLS_msn={done.msn}&_HLS_part={len(done.parts)}"
    if state.segments[-1].complete:
        task = asyncio.ensure_future(client.get(url))
        await asyncio.sleep(0.3)
        assert not task.done()
        feed.until(2.45)
        resp = await asyncio.wait_for(task, 2)
    else:
        resp = await client.get(url)
    assert resp.status == 200
    assert f"{done.msn + 1}.0.m4s" in await resp.text()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("_HLS_part=1", "requires _HLS_msn"),
        ("_HLS_msn=x", "decimal integer"),
        ("_HLS_msn={far}", "plus two"),
        ("_HLS_msn={msn}&_HLS_part={part_far}", "Advance Part Limit"),
    ],
)
async def test_bad_requests(origin, query: str, message: str) -> None:
    client, feed = origin
    feed.until(3)
    msn, part = _last(feed)
    q = query.format(far=msn + 3, msn=msn, part_far=part + 10)
    resp = await client.get(f"/hls/shop/180p/index.m3u8?{q}")
    assert resp.status == 400
    assert message in await resp.text()
    assert int(resp.headers["Cache-Control"].split("=")[1]) <= 2  # errors ≤ 1 target duration


async def test_unsatisfiable_request_is_503(origin) -> None:
    client, feed = origin
    feed.until(3)
    msn, _ = _last(feed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.get(f"/hls/shop/180p/index.m3u8?_HLS_msn={msn + 2}")
    assert resp.status == 503
    # S 6.2.5.2: give up after three target durations.
    assert 2.5 <= loop.time() - started < 6


async def test_hinted_part_is_held_then_served(origin) -> None:
    client, feed = origin
    feed.until(3)
    r = feed.package.renditions["180p"]
    hint = parse(r.playlist()).one("#EXT-X-PRELOAD-HINT").attrs["URI"]
    task = asyncio.ensure_future(client.get(f"/hls/shop/180p/{hint}"))
    await asyncio.sleep(0.5)
    assert not task.done()
    feed.until(3.5)
    resp = await asyncio.wait_for(task, 2)
    assert resp.status == 200
    assert await resp.read() == r.files[hint]
    assert "immutable" in resp.headers["Cache-Control"]
    assert resp.headers["Content-Type"] == "video/iso.segment"


async def test_unknown_resources_404(origin) -> None:
    client, feed = origin
    feed.until(3)
    for path in (
        "/hls/nope/master.m3u8",
        "/hls/shop/999p/index.m3u8",
        "/hls/shop/180p/1.0.m4s",
        "/hls/shop/180p/../../etc/passwd",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path


async def test_headers_cors_gzip_and_plain_cache(origin) -> None:
    client, feed = origin
    feed.until(3)
    resp = await client.get("/hls/shop/180p/index.m3u8", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Age" in resp.headers["Access-Control-Expose-Headers"]
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Cache-Control"] == "public, max-age=1"  # half a target duration, ≥ 1 s
    raw = await client.get(
        "/hls/shop/180p/index.m3u8", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert gzip.decompress(await raw.read()).startswith(b"#EXTM3U")
    master = await client.get("/hls/shop/master.m3u8")
    assert master.status == 200 and "180p/index.m3u8" in await master.text()
    init = await client.get("/hls/shop/180p/init.mp4")
    assert init.headers["Content-Type"] == "video/mp4"


async def test_directives_ignored_after_endlist(origin) -> None:
    client, feed = origin
    feed.finish()
    feed.package.finish()
    resp = await client.get("/hls/shop/180p/index.m3u8?_HLS_msn=99999999999&_HLS_part=3")
    assert resp.status == 200
    assert "#EXT-X-ENDLIST" in await resp.text()
