"""WHIP ingest end to end: aiortc publishes over HTTP + WebRTC (loopback only), HLS comes out."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCRtpSender

from benchmarks.harness.whip_client import (
    fetch_and_decode,
    make_offer,
    make_offerer,
    publish,
    unpublish,
    wait_connected,
)
from ingest.codecs import parse_avcc
from ingest.media import MediaKind
from shopcast.config import WhipSection
from shopcast.server import ShopcastServer

from .conftest import API_TOKEN, Capture, Origin, make_config

pytestmark = pytest.mark.e2e

LOOPBACK = WhipSection(host_addresses=("127.0.0.1",))
SDP = {"Content-Type": "application/sdp"}


async def start_origin(tmp_path: Path, whip: WhipSection = LOOPBACK, **ingest: Any) -> Origin:
    server = ShopcastServer(replace(make_config(tmp_path, **ingest), whip=whip))
    await server.start()
    return Origin(server)


@pytest.fixture
async def whip_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    origin = await start_origin(tmp_path)
    yield origin
    await origin.server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def api_status(http: aiohttp.ClientSession, origin: Origin, stream_id: str = "demo") -> Any:
    async with http.get(
        f"{origin.http}/api/v1/streams/{stream_id}",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as resp:
        assert resp.status == 200
        return await resp.json()


async def until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def captured(capture: Capture) -> None:
    while (unit := capture.reader.get_nowait()) is not None:
        capture.units.append(unit)


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_publish_reaches_hub_ladder_and_hls(
    whip_origin: Origin, http: aiohttp.ClientSession, codec: str
) -> None:
    origin = whip_origin
    pub = await publish(http, origin.http, "demo", await origin.key(), video_codec=codec)
    try:
        assert pub.headers["Content-Type"] == "application/sdp"
        assert pub.location.startswith("/whip/demo/") and len(pub.location) > 40
        assert "ETag" in pub.headers
        assert "a=recvonly" in pub.answer
        assert "a=candidate:" in pub.answer and "127.0.0.1" in pub.answer
        await wait_connected(pub.pc)

        decoded = await fetch_and_decode(http, origin.http, "demo", min_parts=4)
        assert decoded.video_frames >= 10 and decoded.audio_frames >= 10, decoded
        assert (decoded.width, decoded.height) == (360, 640)

        capture = origin.captures[0]
        captured(capture)
        video_config = capture.config(MediaKind.VIDEO)
        assert video_config is not None and video_config.codec == codec.lower()
        if codec == "H264":
            assert parse_avcc(video_config.payload).sps
        # Opus goes onto the hub as it came; the transcoder's rendition is AAC-LC.
        audio_config = capture.config(MediaKind.AUDIO)
        assert audio_config is not None and audio_config.codec == "opus"
        async with http.get(f"{origin.http}/hls/demo/master.m3u8") as resp:
            assert 'mp4a.40.2"' in await resp.text()
        video = capture.frames(MediaKind.VIDEO)
        audio = capture.frames(MediaKind.AUDIO)
        assert video[0].keyframe
        assert all(b.pts > a.pts for a, b in itertools.pairwise(video))
        assert all(b.pts > a.pts for a, b in itertools.pairwise(audio))
        # Both tracks on one clock: they start together (tracks begin within 100 ms here).
        start_v = video[0].pts * video[0].timebase
        start_a = audio[0].pts * audio[0].timebase
        assert abs(float(start_v - start_a)) < 0.15

        status = await api_status(http, origin)
        assert status["state"] == "live"
        assert status["ingest"]["protocol"] == "whip"
        assert status["ingest"]["video"]["codec"] == codec.lower()
        assert (status["ingest"]["video"]["width"], status["ingest"]["video"]["height"]) == (
            360,
            640,
        )
        assert status["ingest"]["audio"]["codec"] == "opus"
    finally:
        assert await unpublish(http, origin.http, pub) == 200
    await until(lambda: not origin.server.whip.sessions and not origin.server.streams.sessions)
    await asyncio.wait_for(origin.captures[0].drain(), 10)  # the hub ended
    assert (await api_status(http, origin))["state"] == "offline"


async def test_error_statuses(whip_origin: Origin, http: aiohttp.ClientSession) -> None:
    origin = whip_origin
    base = origin.http
    other = await origin.server.store.create_stream("other")
    pc = make_offerer("H264")
    offer = await make_offer(pc)
    await pc.close()
    auth = {"Authorization": f"Bearer {await origin.key()}", **SDP}

    async def post(
        stream: str, body: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], str]:
        async with http.post(f"{base}/whip/{stream}", data=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.text()

    assert (await post("nope", offer, auth))[0] == 404
    status, headers, _ = await post("demo", offer, SDP)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert (await post("demo", offer, {**SDP, "Authorization": "Bearer wrong"}))[0] == 401
    other_key = {**SDP, "Authorization": f"Bearer {other.stream_key}"}
    assert (await post("demo", offer, other_key))[0] == 401  # a key of another stream
    assert (await post("demo", offer, {**auth, "Content-Type": "text/plain"}))[0] == 415
    assert (await post("demo", "v=0\r\nthis is not sdp\r\n", auth))[0] == 400
    assert (await post("demo", offer.replace("a=fingerprint", "a=x-nothing"), auth))[0] == 400

    # Audio offered only as PCMU: nothing we take.
    pcmu = make_offerer(None, audio=True)
    caps = RTCRtpSender.getCapabilities("audio")
    assert caps is not None
    pcmu.getTransceivers()[0].setCodecPreferences([c for c in caps.codecs if c.name == "PCMU"])
    pcmu_offer = await make_offer(pcmu)
    await pcmu.close()
    status, _, text = await post("demo", pcmu_offer, auth)
    assert status == 422 and "opus" in text

    async with http.options(f"{base}/whip/demo") as resp:
        assert resp.status == 204
        assert resp.headers["Accept-Post"] == "application/sdp"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    async with http.delete(f"{base}/whip/demo/not-a-session") as resp:
        assert resp.status == 404
    assert not origin.server.whip.sessions  # no refusal left a session behind

    pub = await publish(http, base, "demo", await origin.key())
    try:
        url = base + pub.location
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        async with http.patch(url, data=candidate, headers=SDP) as resp:
            assert resp.status == 415
        async with http.patch(url, data="a=mid:0\r\n" + candidate, headers=frag) as resp:
            assert resp.status == 204
        async with http.patch(url, data=candidate, headers={**frag, "If-Match": '"x"'}) as resp:
            assert resp.status == 412
        restart = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n" + candidate
        async with http.patch(url, data=restart, headers=frag) as resp:
            assert resp.status == 422
        async with http.get(url) as resp:
            assert resp.status == 405
        async with http.patch(f"{base}/whip/other{pub.location[10:]}", data=candidate) as resp:
            assert resp.status == 404  # a session URL is only valid under its own stream
    finally:
        assert await unpublish(http, base, pub) == 200
    async with http.delete(url) as resp:
        assert resp.status == 404  # gone


async def test_capacity_and_rate_limit(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    origin = await start_origin(
        tmp_path, replace(LOOPBACK, max_sessions=1, rate_limit=0.5, rate_burst=4)
    )
    try:
        first = await publish(http, origin.http, "demo", await origin.key())
        pc = make_offerer("H264")
        offer = await make_offer(pc)
        await pc.close()
        headers = {"Authorization": f"Bearer {await origin.key()}", **SDP}
        async with http.post(f"{origin.http}/whip/demo", data=offer, headers=headers) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"].isdigit()
        statuses = []
        for _ in range(4):
            async with http.post(f"{origin.http}/whip/nope", data=offer, headers=headers) as r:
                statuses.append(r.status)
        assert statuses[:2] == [404, 404] and statuses[-1] == 429, statuses
        await first.pc.close()
    finally:
        await origin.server.close()
    assert not origin.server.whip.sessions


async def test_takeover_and_reject(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    origin = await start_origin(tmp_path)
    try:
        first = await publish(http, origin.http, "demo", await origin.key())
        await wait_connected(first.pc)
        second = await publish(http, origin.http, "demo", await origin.key())
        await wait_connected(second.pc)
        await until(lambda: len(origin.server.whip.sessions) == 1)
        live = origin.server.streams.sessions["demo"]
        assert live.publisher.id == second.location.rsplit("/", 1)[1]  # type: ignore[attr-defined]
        state = origin.server.streams.states["demo"]
        assert state.last_error and "taken over" in state.last_error
        async with http.delete(
            f"{origin.http}/api/v1/streams/demo/publisher",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as resp:
            assert resp.status in (200, 204)
        await until(lambda: not origin.server.whip.sessions)  # the API kick closed it
        assert "demo" not in origin.server.streams.sessions
        await second.pc.close()
        await first.pc.close()
    finally:
        await origin.server.close()

    origin = await start_origin(tmp_path / "reject", on_duplicate_publisher="reject")
    try:
        first = await publish(http, origin.http, "demo", await origin.key())
        pc = make_offerer("H264")
        offer = await make_offer(pc)
        headers = {"Authorization": f"Bearer {await origin.key()}", **SDP}
        async with http.post(f"{origin.http}/whip/demo", data=offer, headers=headers) as resp:
            assert resp.status == 409
        await pc.close()
        assert len(origin.server.whip.sessions) == 1
        await unpublish(http, origin.http, first)
    finally:
        await origin.server.close()


async def test_publisher_gone_without_delete_ends_session(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    origin = await start_origin(tmp_path, replace(LOOPBACK, connect_timeout=1.0))
    try:
        pub = await publish(http, origin.http, "demo", await origin.key())
        await wait_connected(pub.pc)
        await until(lambda: origin.server.streams.sessions.get("demo") is not None)
        await pub.pc.close()  # DTLS close_notify / RTCP BYE, no DELETE
        await until(lambda: not origin.server.whip.sessions, timeout=15)
        assert "demo" not in origin.server.streams.sessions

        # An offer whose answer is never applied: ICE never connects, the session times out.
        pc = make_offerer("H264")
        offer = await make_offer(pc)
        headers = {"Authorization": f"Bearer {await origin.key()}", **SDP}
        async with http.post(f"{origin.http}/whip/demo", data=offer, headers=headers) as resp:
            assert resp.status == 201
        await until(lambda: not origin.server.whip.sessions, timeout=5)
        assert "not connected" in (origin.server.streams.states["demo"].last_error or "")
        await pc.close()
    finally:
        await origin.server.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> list[str]:
    # The default executor's threads (asyncio.to_thread) are pooled and outlive their work.
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("asyncio_"))


async def test_twenty_sessions_leave_nothing_behind(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    origin = await start_origin(tmp_path, replace(LOOPBACK, rate_burst=100))
    server = origin.server

    # Closed sessions stay referenced here, so garbage collection cannot hide a leak (asyncio
    # transports close their sockets when collected).
    kept: list[Any] = []

    async def one_session() -> None:
        pub = await publish(http, origin.http, "demo", await origin.key())
        (session,) = server.whip.sessions.values()
        kept.append(session)
        await wait_connected(pub.pc)
        await until(lambda: origin.captures[-1].session.stats.video_frames > 3)
        async with http.delete(origin.http + pub.location) as resp:
            assert resp.status == 200
        # The server closes its side on DELETE alone (the client's close would also end it).
        await until(lambda: session.pc.connectionState == "closed", timeout=5)
        await pub.pc.close()
        await until(lambda: not server.whip.sessions and not server.streams.sessions)

    try:
        await one_session()  # warm-up: lazy imports, codec tables, executor threads
        await asyncio.sleep(0.5)
        threads, fds = _threads(), _fds()
        tasks = len(asyncio.all_tasks())
        for _ in range(20):
            await one_session()
        for capture in origin.captures:
            await capture.drain()  # every hub ended
        await until(lambda: _threads() == threads, timeout=10)
        assert _fds() <= fds + 2, (fds, _fds(), os.listdir("/proc/self/fd"))
        await asyncio.sleep(0.2)
        assert len(asyncio.all_tasks()) <= tasks + 2
        assert not server.whip.sessions
        assert len(kept) == 21
        assert {s.pc.connectionState for s in kept} == {"closed"}
        assert all(s.closed and not s._tasks for s in kept)
    finally:
        await server.close()


async def test_udp_port_range(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # A free two-port range (the media socket of one session; the second finds none).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    whip = replace(LOOPBACK, udp_port_min=port, udp_port_max=port)
    origin = await start_origin(tmp_path, whip)
    try:
        pub = await publish(http, origin.http, "demo", await origin.key())
        ports = {int(p) for p in re.findall(r"a=candidate:\S+ \d \w+ \d+ \S+ (\d+)", pub.answer)}
        assert ports == {port}
        await wait_connected(pub.pc)
        pc = make_offerer("H264")
        offer = await make_offer(pc)
        headers = {"Authorization": f"Bearer {await origin.key()}", **SDP}
        async with http.post(f"{origin.http}/whip/demo", data=offer, headers=headers) as resp:
            assert resp.status == 503 and "UDP port" in await resp.text()
        await pc.close()
        assert len(origin.server.whip.sessions) == 1
        assert await unpublish(http, origin.http, pub) == 200
    finally:
        await origin.server.close()


async def test_data_channel_messages_become_product_tags(
    whip_origin: Origin, http: aiohttp.ClientSession
) -> None:
    origin = whip_origin
    pub = await publish(http, origin.http, "demo", await origin.key(), tags_channel=True)
    assert pub.channel is not None
    replies: asyncio.Queue[str] = asyncio.Queue()
    pub.channel.on("message", replies.put_nowait)
    try:
        await wait_connected(pub.pc)
        await until(lambda: pub.channel is not None and pub.channel.readyState == "open")
        await fetch_and_decode(http, origin.http, "demo", min_parts=1)  # the ladder is up
        pub.channel.send('{"kind": "product", "product_id": "sku-42", "data": {"price": 9}}')
        tag = json.loads(await asyncio.wait_for(replies.get(), 10))
        assert tag["product_id"] == "sku-42" and tag["source"] == "cue", tag
        newest = origin.server.streams.sessions["demo"].stats.newest_pts_ms
        assert newest is not None and abs(tag["pts"] - newest) < 500  # the frame being sent
        pub.channel.send('{"kind": "nonsense"}')
        refused = json.loads(await asyncio.wait_for(replies.get(), 10))
        assert refused["error"]["code"] == "invalid"
        pub.channel.send("not json")
        assert json.loads(await asyncio.wait_for(replies.get(), 10))["error"]["code"] == "invalid"
        async with http.get(
            f"{origin.http}/api/v1/streams/demo/tags",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as resp:
            listed = (await resp.json())["tags"]
        assert [t["id"] for t in listed] == [tag["id"]]
    finally:
        await unpublish(http, origin.http, pub)


@pytest.mark.parametrize(("video", "audio"), [(None, True), ("H264", False)])
async def test_single_track_publish(
    whip_origin: Origin, http: aiohttp.ClientSession, video: str | None, audio: bool
) -> None:
    origin = whip_origin
    pub = await publish(
        http, origin.http, "demo", await origin.key(), video_codec=video, audio=audio
    )
    try:
        await wait_connected(pub.pc)
        if video is not None:
            decoded = await fetch_and_decode(http, origin.http, "demo", min_parts=2)
            assert decoded.video_frames > 0 and decoded.audio_frames == 0, decoded
        else:
            # The transcoder announces an audio-only ladder only at the stream's end (as for
            # RTMP), so the hub is checked here rather than the playlists.
            stats = origin.captures[0].session.stats
            await until(lambda: stats.audio_frames > 20)
            assert stats.video_frames == 0 and stats.audio_codec == "opus"
        status = await api_status(http, origin)
        assert status["ingest"]["protocol"] == "whip"
        assert len(origin.server.whip.sessions) == 1  # still connected, not timed out
    finally:
        assert await unpublish(http, origin.http, pub) == 200
