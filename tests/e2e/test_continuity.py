"""Show continuity with real clients: ffmpeg publishes, dies (SIGKILL, SIGSTOP) or ends
cleanly; playlists followed with blocking reloads; PyAV decodes the slate; hls.js plays it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.browser import CHROMIUM
from benchmarks.harness.continuity import PlaylistWatch, decode_segment
from benchmarks.harness.whip_client import publish as whip_publish
from benchmarks.harness.whip_client import unpublish
from shopcast.config import HooksSection, PackagerSection, WhipSection, load_config
from shopcast.server import ShopcastServer
from shopcast.web import HLS_JS
from transcode.policy import LadderConfig

from .conftest import (
    API_TOKEN,
    Origin,
    Receiver,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)

pytestmark = [pytest.mark.e2e, requires_ffmpeg]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SLATE_WINDOW = 5.0
RECONNECT_WINDOW = 2.0
#: Allowed on top of one part target between the publisher's last part and the first slate part.
SLATE_MARGIN = 0.1
#: The 180×320 source passes through as 180p (its slate needs an init of its own); 90p is
#: re-encoded (its slate shares the rung's init).
LADDER = LadderConfig.from_mapping({"rungs": ["180p:200k", "90p:100k"]})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    hook_url: str,
    slate_window: float,
    warm_standby: str = "backup",
    backup_return: str = "main",
    **sections: Any,
) -> AsyncIterator[Origin]:
    # The continuity settings come from the environment, as an operator would set them.
    env = {
        "SHOPCAST_CONTINUITY_SLATE_WINDOW": str(slate_window),
        "SHOPCAST_CONTINUITY_WARM_STANDBY": warm_standby,
        "SHOPCAST_CONTINUITY_BACKUP_RETURN": backup_return,
    }
    config = dataclasses.replace(
        make_config(tmp_path, LADDER),
        continuity=load_config(None, env=env).continuity,
        packager=PackagerSection(reconnect_window=RECONNECT_WINDOW),
        hooks=HooksSection(webhook_urls=(hook_url,), webhook_secret="hook-secret"),
        **sections,
    )
    server = ShopcastServer(config)
    await server.start()
    try:
        yield Origin(server)
    finally:
        await server.close()


@pytest.fixture
async def origin(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Origin]:
    async with serving(tmp_path, receiver.url, SLATE_WINDOW) as o:
        yield o


async def publish(origin: Origin, seconds: float = 120) -> asyncio.subprocess.Process:
    return await start_ffmpeg(
        ffmpeg_publish_args(origin.rtmp_url(await origin.key()), seconds=seconds, realtime=True)
    )


def event_types(receiver: Receiver) -> list[str]:
    return [e["type"] for e in receiver.events()]


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def ready_show(origin: Origin) -> list[str]:
    """Wait until the show's ladder is known and its slate encoded; its rendition names."""

    def ready() -> bool:
        package = origin.server.pipelines.package("demo")
        return package is not None and bool(package.renditions) and bool(package.slate_clips)

    await until(ready, 30, "the ladder and its slate")
    package = origin.server.pipelines.package("demo")
    assert package is not None
    return list(package.renditions)


@contextlib.asynccontextmanager
async def watching(origin: Origin, names: list[str]) -> AsyncIterator[dict[str, PlaylistWatch]]:
    async with aiohttp.ClientSession() as http:
        watches = {n: PlaylistWatch(http, f"{origin.http}/hls/demo/{n}/index.m3u8") for n in names}
        tasks = [asyncio.create_task(w.run()) for w in watches.values()]
        try:
            yield watches
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def api(origin: Origin, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{origin.http}{path}", json=body, headers=AUTH) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def metric(origin: Origin, name: str) -> float | None:
    async with aiohttp.ClientSession() as http, http.get(f"{origin.http}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(f'{name}{{stream="demo"}}'):
                return float(line.split()[-1])
    return None


async def fetch(origin: Origin, rendition: str, uri: str) -> bytes:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{origin.http}/hls/demo/{rendition}/{uri}") as resp,
    ):
        assert resp.status == 200, uri
        return await resp.read()


async def test_killed_publisher_gets_a_slate_then_resumes_then_ends(
    origin: Origin, receiver: Receiver
) -> None:
    publisher = await publish(origin)
    try:
        names = await ready_show(origin)
        assert sorted(names) == ["180p", "90p"]
        package = origin.server.pipelines.package("demo")
        assert package is not None
        part_target = float(package.config.part_target)
        async with watching(origin, names) as watches:
            await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
            publisher.send_signal(signal.SIGKILL)
            await publisher.wait()

            # Every rendition lists a slate part within one part target of its last live part.
            await until(lambda: all(w.discontinuity >= 1 for w in watches.values()), 10, "slate")
            for name, w in watches.items():
                gap = w.switch_gap(1)
                print(f"{name}: last live part → first slate part listed {gap}")
                assert gap is not None and gap <= part_target + SLATE_MARGIN, (name, gap)
            status, body = await api(origin, "GET", "/api/v1/streams/demo")
            assert status == 200 and body["active_input"] == "slate", body
            assert await metric(origin, "shopcast_stream_on_slate") == 1.0

            # A tag posted on slate lands on a slate frame (the tag timeline keeps working).
            status, tag = await api(
                origin, "POST", "/api/v1/streams/demo/tags", {"kind": "product", "product_id": "s1"}
            )
            assert status == 201, tag
            await until(
                lambda: all(tag["id"] in w.text for w in watches.values()), 5, "the tag listed"
            )

            # PyAV decodes a complete slate segment of every rendition at its own size.
            def slate_segments(w: PlaylistWatch) -> list[Any]:
                return [s for s in w.segments() if s.discontinuity == 1]

            await until(
                lambda: all(slate_segments(w) for w in watches.values()), 10, "slate segments"
            )
            for name, w in watches.items():
                info = package.renditions[name].info
                segment = slate_segments(w)[0]
                # A passthrough rung's slate has an avcC of its own (a new EXT-X-MAP); a
                # re-encoded rung's slate is encoded with the rung's settings: the same init.
                expected = "slate-" if info.passthrough else "init.mp4"
                assert segment.map_uri.startswith(expected), (name, segment)
                sizes, audio = decode_segment(
                    await fetch(origin, name, segment.map_uri),
                    await fetch(origin, name, segment.uri),
                )
                assert sizes and set(sizes) == {(info.width, info.height)}, (name, sizes[:3])
                assert audio > 0, name

            # The publisher comes back: the show resumes after another discontinuity.
            publisher = await publish(origin)
            await until(
                lambda: all(w.discontinuity >= 2 for w in watches.values()), 20, "the resume"
            )
            status, body = await api(origin, "GET", "/api/v1/streams/demo")
            assert body["active_input"] == "main", body
            for w in watches.values():
                back = [s for s in w.segments() if s.discontinuity == 2]
                assert all(s.map_uri == "init.mp4" for s in back), back
            slate_seconds = await metric(origin, "shopcast_slate_seconds_total")
            assert slate_seconds is not None and slate_seconds > 1.0

            # Killed again and not back within the slate window: ENDLIST.
            await until(lambda: all(len(w.parts) > 0 for w in watches.values()), 5, "parts")
            await asyncio.sleep(1)
            publisher.send_signal(signal.SIGKILL)
            await publisher.wait()
            killed = time.monotonic()
            await until(lambda: all(w.ended for w in watches.values()), SLATE_WINDOW + 10, "end")
            assert time.monotonic() - killed >= SLATE_WINDOW - 0.5
            assert all(w.discontinuity == 3 for w in watches.values())
        # The recording kept the slate segments, their discontinuities and the slate's init.
        await until(lambda: "recording.ready" in event_types(receiver), 10, "recording.ready")
        _, body = await api(origin, "GET", "/api/v1/streams/demo/recordings")
        [recording] = body["recordings"]
        async with aiohttp.ClientSession() as http:
            base = f"{origin.http}/vod/{recording['id']}/180p"
            async with http.get(f"{base}/index.m3u8") as resp:
                vod = PlaylistWatch(http, "")
                vod.text = await resp.text()
            slate_maps = {s.map_uri for s in vod.segments() if s.map_uri.startswith("slate-")}
            assert len(slate_maps) == 1 and vod.text.count("#EXT-X-DISCONTINUITY\n") == 3
            async with http.get(f"{base}/{slate_maps.pop()}") as resp:
                assert resp.status == 200 and resp.content_type == "video/mp4"
        types = event_types(receiver)
        assert types.count("stream.interrupted") == 2, types
        assert types.count("stream.resumed") == 1, types
        resumed = next(e for e in receiver.events() if e["type"] == "stream.resumed")
        assert resumed["data"]["stream_id"] == "demo" and resumed["data"]["slate_seconds"] > 1
    finally:
        await stop_ffmpeg(publisher)


async def test_media_gap_brings_the_slate(origin: Origin) -> None:
    """A publisher that stays connected but sends nothing (SIGSTOP) is a drop after gap_timeout."""
    publisher = await publish(origin)
    try:
        names = await ready_show(origin)
        async with watching(origin, names) as watches:
            await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
            publisher.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            await until(lambda: all(w.discontinuity >= 1 for w in watches.values()), 10, "slate")
            gap_timeout = origin.server.config.continuity.gap_timeout
            assert time.monotonic() - stopped < gap_timeout + 2
            _, body = await api(origin, "GET", "/api/v1/streams/demo")
            assert body["active_input"] == "slate" and body["state"] == "offline", body
            assert "no media" in body["last_error"]
    finally:
        publisher.send_signal(signal.SIGCONT)
        await stop_ffmpeg(publisher)


async def test_clean_unpublish_is_no_drop(origin: Origin, receiver: Receiver) -> None:
    """ffmpeg ending its input unpublishes (FCUnpublish): no slate, ENDLIST after the short
    reconnect window."""
    publisher = await publish(origin, seconds=5)
    names = await ready_show(origin)
    async with watching(origin, names) as watches:
        assert await publisher.wait() == 0
        ended = time.monotonic()
        _, body = await api(origin, "GET", "/api/v1/streams/demo")
        assert body["active_input"] == "main", body
        await until(lambda: all(w.ended for w in watches.values()), RECONNECT_WINDOW + 8, "end")
        assert time.monotonic() - ended >= RECONNECT_WINDOW - 0.5
        for w in watches.values():
            assert w.discontinuity == 0 and "#EXT-X-DISCONTINUITY" not in w.text
    package = origin.server.pipelines.package("demo")
    assert package is not None and package.slate_seconds == 0
    assert "stream.interrupted" not in event_types(receiver)


async def test_end_endpoint_ends_the_show_at_once(origin: Origin) -> None:
    publisher = await publish(origin)
    try:
        names = await ready_show(origin)
        status, body = await api(origin, "POST", "/api/v1/streams/demo/end")
        assert status == 200 and body == {"id": "demo", "state": "ended"}
        for name in names:  # ENDLIST is there on the very next request
            playlist = (await fetch(origin, name, "index.m3u8")).decode()
            assert playlist.rstrip().endswith("#EXT-X-ENDLIST") or "#EXT-X-ENDLIST" in playlist
        await asyncio.wait_for(publisher.wait(), 10)  # the publisher was kicked
        status, body = await api(origin, "GET", "/api/v1/streams/demo/recordings")
        assert [r["state"] for r in body["recordings"]] == ["ready"], body
        status, body = await api(origin, "POST", "/api/v1/streams/demo/end")
        assert status == 409 and body["error"]["code"] == "offline"
        status, body = await api(origin, "POST", "/api/v1/streams/nope/end")
        assert status == 404
    finally:
        await stop_ffmpeg(publisher)


async def test_whip_delete_is_clean_and_silent_tracks_are_a_drop(
    tmp_path: Path, receiver: Receiver
) -> None:
    """WHIP: DELETE ends on purpose (no slate); a peer whose tracks go silent (ICE still up)
    is a drop after gap_timeout, and the slate follows."""
    whip = WhipSection(host_addresses=("127.0.0.1",))
    async with serving(tmp_path, receiver.url, SLATE_WINDOW, whip=whip) as origin:
        async with aiohttp.ClientSession() as http:
            first = await whip_publish(
                http, origin.http, "demo", await origin.key(), size=(180, 320)
            )
            await ready_show(origin)
            assert await unpublish(http, origin.http, first) == 200
            await asyncio.sleep(origin.server.config.continuity.gap_timeout + 0.5)
            package = origin.server.pipelines.package("demo")
            assert package is not None and package.active_input == "main"
            assert package.slate_seconds == 0

            # Back within the reconnect window: the same show goes on; then the tracks stop.
            second = await whip_publish(
                http, origin.http, "demo", await origin.key(), size=(180, 320)
            )
            try:
                sessions = origin.server.streams.sessions
                await until(lambda: any(x.last_media for x in sessions.values()), 10, "its media")
                await asyncio.sleep(1)
                for sender in second.pc.getSenders():
                    sender.replaceTrack(None)
                await until(lambda: package.active_input == "slate", 5, "the slate")
                _, body = await api(origin, "GET", "/api/v1/streams/demo")
                assert body["active_input"] == "slate" and "no media" in body["last_error"]
            finally:
                await second.pc.close()
        assert event_types(receiver).count("stream.interrupted") == 1


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")
@pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not installed (npm install)")
async def test_hlsjs_plays_through_the_slate(
    tmp_path: Path, receiver: Receiver, browser: Any
) -> None:
    # The 30 s of slate, inside a window long enough that the show does not end meanwhile.
    async with serving(tmp_path, receiver.url, slate_window=60) as origin:
        await play_through_slate(origin, browser, seconds=30)


async def advancing(page: Any, seconds: float) -> None:
    """Playback moves on for ``seconds`` with no fatal hls.js error."""
    start = float(await page.evaluate("document.getElementById('video').currentTime"))
    await asyncio.sleep(seconds)
    end = float(await page.evaluate("document.getElementById('video').currentTime"))
    assert end - start >= seconds * 0.6, f"playback stalled: {start:.2f} → {end:.2f}"
    fatal = await page.evaluate("window.shopcast.errors.filter(e => e.fatal)")
    assert fatal == [], fatal


async def play_through_slate(origin: Origin, browser: Any, seconds: float) -> None:
    """On the passthrough rung (whose slate brings its own init: EXT-X-MAP changes twice),
    hls.js plays through ``seconds`` of slate and on after the publisher is back."""
    publisher = await publish(origin)
    try:
        await ready_show(origin)
        page = await browser.new_page()
        await page.goto(f"{origin.http}/demo/demo")
        await page.wait_for_function(
            "document.getElementById('video').currentTime > 1", timeout=30_000
        )
        level = await page.evaluate("hls.levels.findIndex(l => l.height === 320)")
        await page.evaluate(f"hls.currentLevel = {level}")
        await page.wait_for_function(
            f"window.shopcast.levelSwitches.includes({level})", timeout=15_000
        )
        await asyncio.sleep(1)
        publisher.send_signal(signal.SIGKILL)
        await publisher.wait()
        package = origin.server.pipelines.package("demo")
        assert package is not None
        await until(lambda: package.active_input == "slate", 10, "slate")
        await advancing(page, seconds)
        assert package.active_input == "slate"
        publisher = await publish(origin)
        await until(lambda: package.active_input == "main", 20, "the resume")
        await asyncio.sleep(3)  # the first parts of the returned publisher reach the player
        await advancing(page, 4)
        assert await page.evaluate("hls.currentLevel") == level
    finally:
        await stop_ffmpeg(publisher)
