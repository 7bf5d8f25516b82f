"""The control API end to end: every endpoint's success and error paths, with real publishers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from ingest.shown import SHOWN

from .conftest import API_TOKEN, Origin, ffmpeg_publish_args, requires_ffmpeg, run_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def call(
    origin: Origin, method: str, path: str, body: Any = None, headers: dict | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{origin.http}{path}",
            json=body,
            headers=AUTH if headers is None else headers,
        ) as r,
    ):
        data = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, data


def error_code(data: Any) -> str:
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}
    return str(data["error"]["code"])


async def wait_live(origin: Origin, stream_id: str, renditions: bool = False) -> dict:
    for _ in range(200):
        status, st = await call(origin, "GET", f"/api/v1/streams/{stream_id}")
        assert status == 200
        if st["state"] == "live" and (not renditions or st["renditions"]):
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream_id} never went live: {st}")


async def test_create_list_get_delete(origin: Origin) -> None:
    status, created = await call(origin, "POST", "/api/v1/streams", {"id": "shoe-launch"})
    assert status == 201
    assert created["id"] == "shoe-launch" and len(created["stream_key"]) >= 32
    assert created["rtmp_url"].endswith(f"/live/{created['stream_key']}")
    assert created["playback_url"].endswith("/hls/shoe-launch/master.m3u8")
    assert created["whip_url"].endswith("/whip/shoe-launch")
    srt = f"?streamid=#!::r=shoe-launch,m=publish,k={created['stream_key']}"
    assert created["srt_url"].startswith("srt://") and created["srt_url"].endswith(srt)
    status, data = await call(origin, "POST", "/api/v1/streams", {"id": "shoe-launch"})
    assert (status, error_code(data)) == (409, "conflict")
    for bad in ({"id": "Bad Id"}, {"id": 3}, {}, [], {"id": "ok", "extra": 1}):
        status, data = await call(origin, "POST", "/api/v1/streams", bad)
        assert (status, error_code(data)) == (422, "invalid"), bad
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{origin.http}/api/v1/streams", data=b"{nope", headers=AUTH) as r,
    ):
        assert (r.status, error_code(await r.json())) == (400, "bad_json")
    status, listing = await call(origin, "GET", "/api/v1/streams")
    assert {s["id"] for s in listing["streams"]} == {"demo", "shoe-launch"}
    status, st = await call(origin, "GET", "/api/v1/streams/shoe-launch")
    assert status == 200
    assert (st["state"], st["ingest"], st["renditions"], st["viewers"]) == ("offline", None, [], 0)
    assert (await call(origin, "DELETE", "/api/v1/streams/shoe-launch"))[0] == 204
    status, data = await call(origin, "GET", "/api/v1/streams/shoe-launch")
    assert (status, error_code(data)) == (404, "not_found")
    assert (await call(origin, "DELETE", "/api/v1/streams/shoe-launch"))[0] == 404
    code, _ = await run_ffmpeg(ffmpeg_publish_args(origin.rtmp_url(created["stream_key"])))
    assert code != 0  # a deleted stream's key is dead


async def test_long_ids_in_paths_are_quoted_short(origin: Origin) -> None:
    long_id = "z" * 6000  # within aiohttp's request line bound, far beyond any stream id
    for path in (f"/api/v1/streams/{long_id}", f"/api/v1/streams/{long_id}/tags"):
        status, data = await call(origin, "GET", path)
        assert (status, error_code(data)) == (404, "not_found")
        assert len(data["error"]["message"]) < SHOWN + 40 and "z" * SHOWN not in str(data)


async def test_auth_negatives(origin: Origin) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        status, data = await call(origin, "GET", "/api/v1/streams", headers=headers)
        assert (status, error_code(data)) == (401, "unauthorized")
    status, data = await call(origin, "POST", "/api/v1/streams", {"id": "x"}, headers={})
    assert status == 401
    assert (await call(origin, "GET", "/api/v1/streams/x", headers={}))[0] == 401
    status, spec = await call(origin, "GET", "/api/v1/openapi.json", headers={})
    assert status == 200 and spec["openapi"].startswith("3.")  # the spec itself is public


async def test_rotated_key_refuses_the_old_one(origin: Origin) -> None:
    old = await origin.key()
    status, rotated = await call(origin, "POST", "/api/v1/streams/demo/key")
    assert status == 200 and rotated["stream_key"] != old
    assert await origin.key() == rotated["stream_key"]
    code, _ = await run_ffmpeg(ffmpeg_publish_args(origin.rtmp_url(old)))
    assert code != 0  # the old key is dead at once
    code, err = await run_ffmpeg(ffmpeg_publish_args(origin.rtmp_url(rotated["stream_key"])))
    assert code == 0, err
    assert (await call(origin, "POST", "/api/v1/streams/nope/key"))[0] == 404


async def test_live_controls_kick_and_vertical(origin: Origin) -> None:
    status, data = await call(origin, "DELETE", "/api/v1/streams/demo/publisher")
    assert (status, error_code(data)) == (409, "offline")
    status, data = await call(origin, "PATCH", "/api/v1/streams/demo/vertical", {"focus": 0.2})
    assert (status, error_code(data)) == (409, "offline")
    publish = asyncio.ensure_future(
        run_ffmpeg(
            ffmpeg_publish_args(
                origin.rtmp_url(await origin.key()), seconds=30, size="640x360", realtime=True
            )
        )
    )
    st = await wait_live(origin, "demo", renditions=True)
    names = {r["name"] for r in st["renditions"]}
    assert names == {"180p"}  # 640×360 landscape crops to 202×360: only 180p fits
    r180 = st["renditions"][0]
    assert (r180["width"], r180["height"]) == (180, 320) and r180["codecs"].startswith("avc1.")
    assert st["ingest"]["video"]["width"] == 640
    for body in ({"focus": 2}, {"focus": "left"}, {"mode": "stretch"}, {}, {"zoom": 1}):
        status, data = await call(origin, "PATCH", "/api/v1/streams/demo/vertical", body)
        assert (status, error_code(data)) == (422, "invalid"), body
    status, applied = await call(
        origin, "PATCH", "/api/v1/streams/demo/vertical", {"mode": "pad", "focus": 0.25}
    )
    assert (status, applied) == (200, {"mode": "pad", "focus": 0.25})
    transcoder = origin.server.pipelines.pipelines["demo"].transcoder
    assert transcoder is not None and transcoder.vertical.focus == 0.25
    await asyncio.sleep(1)
    assert (await call(origin, "DELETE", "/api/v1/streams/demo/publisher"))[0] == 204
    code, _ = await asyncio.wait_for(publish, 10)
    assert code != 0  # ffmpeg was disconnected
    status, st = await call(origin, "GET", "/api/v1/streams/demo")
    assert st["state"] == "offline" and "API" in st["last_error"]
