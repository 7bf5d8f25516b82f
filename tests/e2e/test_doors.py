"""Every door refuses the wrong caller: on_publish hook, signed webhooks, signed playback URLs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from packager import access
from packager.playlist import parse_media_playlist
from shopcast.config import HooksSection, PlaybackSection, RecordSection
from shopcast.server import ShopcastServer

from .conftest import (
    API_TOKEN,
    Origin,
    Receiver,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    run_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
SECRET = "hook-secret"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


async def start_origin(tmp_path: Path, **sections: object) -> Origin:
    config = dataclasses.replace(make_config(tmp_path), **sections)  # type: ignore[arg-type]
    server = ShopcastServer(config)
    await server.start()
    return Origin(server)


def valid_signature(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Shopcast-Signature", ""), expected)


async def test_on_publish_hook_admits_refuses_and_fails_closed(
    tmp_path: Path, receiver: Receiver
) -> None:
    origin = await start_origin(
        tmp_path, hooks=HooksSection(on_publish=receiver.url, on_publish_timeout=1.0)
    )
    url = origin.rtmp_url(await origin.key())
    try:
        code, err = await run_ffmpeg(ffmpeg_publish_args(url, seconds=1))
        assert code == 0, err
        [(_, body)] = receiver.requests
        assert json.loads(body)["stream_id"] == "demo"
        assert json.loads(body)["protocol"] == "rtmp"

        async def deny() -> web.Response:
            return web.Response(status=403)

        async def hang() -> web.Response:
            await asyncio.sleep(5)
            return web.Response(status=204)

        for reply in (deny, hang):
            receiver.reply = reply
            code, _ = await run_ffmpeg(ffmpeg_publish_args(url, seconds=1))
            assert code != 0, reply.__name__
        await receiver.close()  # nobody listening: refused too
        code, _ = await run_ffmpeg(ffmpeg_publish_args(url, seconds=1))
        assert code != 0
        assert len(origin.captures) == 1  # only the admitted publish ever reached a hub
    finally:
        await origin.server.close()


async def test_webhooks_signed_and_a_dead_receiver_slows_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    # A second receiver that accepts connections and never answers.
    async def black_hole(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    dead = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    dead_url = f"http://127.0.0.1:{dead.sockets[0].getsockname()[1]}/hook"
    origin = await start_origin(
        tmp_path,
        hooks=HooksSection(webhook_urls=(dead_url, receiver.url), webhook_secret=SECRET),
        # The stream's own events only: recording webhooks are checked in test_replay.
        record=RecordSection(enabled=False),
    )
    hooks = origin.server.webhooks
    hooks.attempts, hooks.backoff, hooks.timeout = 3, 0.05, 0.3
    try:
        ref = tmp_path / "ref.flv"
        code, err = await run_ffmpeg(
            ffmpeg_publish_args(origin.rtmp_url(await origin.key()), seconds=2, copy_to=ref)
        )
        assert code == 0, err
        [capture] = origin.captures
        await capture.drain()
        assert len([u for u in capture.units if not u.is_config and u.kind.value == "video"]) == 60
        for _ in range(100):
            if len(receiver.requests) >= 2 and hooks.stats.failed >= 2:
                break
            await asyncio.sleep(0.05)
        events = receiver.events()
        assert [e["type"] for e in events] == ["stream.started", "stream.ended"]
        assert all(e["data"]["stream_id"] == "demo" for e in events)
        assert all(valid_signature(h, b) for h, b in receiver.requests)
        assert receiver.requests[0][0]["X-Shopcast-Event"] == "stream.started"
        assert hooks.stats.failed == 2 and hooks.stats.retries >= 4  # the dead one, counted
    finally:
        await origin.server.close()
        dead.close()


async def test_tag_created_webhook(tmp_path: Path, receiver: Receiver) -> None:
    origin = await start_origin(
        tmp_path, hooks=HooksSection(webhook_urls=(receiver.url,), webhook_secret=SECRET)
    )
    publish = await start_ffmpeg(
        ffmpeg_publish_args(origin.rtmp_url(await origin.key()), seconds=8, realtime=True)
    )
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as h:
            for _ in range(100):
                async with h.post(
                    f"{origin.http}/api/v1/streams/demo/tags",
                    json={"kind": "product", "product_id": "sku-7"},
                ) as r:
                    if r.status == 201:
                        tag = await r.json()
                        break
                await asyncio.sleep(0.1)
        for _ in range(50):
            if any(e["type"] == "tag.created" for e in receiver.events()):
                break
            await asyncio.sleep(0.05)
        created = [e for e in receiver.events() if e["type"] == "tag.created"]
        assert [e["data"]["id"] for e in created] == [tag["id"]]
        assert created[0]["data"]["product_id"] == "sku-7"
        assert all(valid_signature(h, b) for h, b in receiver.requests)
    finally:
        await stop_ffmpeg(publish)
        await origin.server.close()


async def test_signed_playback_urls(tmp_path: Path) -> None:
    secret = "playback-secret"
    origin = await start_origin(tmp_path, playback=PlaybackSection(secret=secret))
    publish = await start_ffmpeg(
        ffmpeg_publish_args(origin.rtmp_url(await origin.key()), seconds=10, realtime=True)
    )
    base = f"{origin.http}/hls/demo"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{origin.http}/api/v1/streams/demo/playback-token",
                json={"ttl": 600},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as r:
                assert r.status == 201
                minted = await r.json()
            token = minted["token"]
            assert minted["playback_url"].endswith(f"/hls/demo/master.m3u8?token={token}")
            for _ in range(100):
                async with http.get(f"{base}/master.m3u8", params={"token": token}) as r:
                    if r.status == 200:
                        master = await r.text()
                        break
                await asyncio.sleep(0.1)
            variant = next(line for line in master.splitlines() if line.endswith(token))
            async with http.get(f"{base}/{variant}") as r:  # the carried token works
                assert r.status == 200
                media = await r.text()
            assert f'URI="init.mp4?token={token}"' in media
            part = parse_media_playlist(media).parts[0][2]
            rendition = variant.split("/")[0]
            async with http.get(f"{base}/{rendition}/{part}") as r:
                assert r.status == 200 and len(await r.read()) > 0
            expired = access.mint(secret, "demo", int(time.time()) - 1)
            other = access.mint(secret, "other", int(time.time()) + 600)
            forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
            for bad, why in (
                (None, "required"),
                (expired, "expired"),
                (other, "invalid"),
                (forged, "invalid"),
                ("garbage", "malformed"),
            ):
                params = {} if bad is None else {"token": bad}
                for path in ("master.m3u8", f"{rendition}/index.m3u8", f"{rendition}/init.mp4"):
                    async with http.get(f"{base}/{path}", params=params) as r:
                        assert r.status == 403, (path, bad)
                        assert why in await r.text()
    finally:
        await stop_ffmpeg(publish)
        await origin.server.close()
