"""SRT sessions on a real origin: a second SRT client (srt-live-transmit), garbage, takeover,
kick, key rotation and the admission hook — the same registry paths as RTMP and WHIP."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingest.media import MediaUnit
from ingest.mpegts import NEED_DATA, StreamEnded, TSDemuxer
from ingest.sessions import Publisher
from ingest.srt.server import UNAVAILABLE
from shopcast.server import ShopcastServer

from .conftest import (
    API_TOKEN,
    Origin,
    make_config,
    requires_ffmpeg,
    run_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from .test_srt import ffmpeg_srt_args, srt_url

SLT = shutil.which("srt-live-transmit")
VECTOR = Path(__file__).parent.parent / "ingest" / "vectors" / "ts_h264_aac.ts"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
    pytest.mark.skipif(SLT is None, reason="srt-live-transmit (srt-tools) missing"),
]
NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def srt_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    yield Origin(server)
    await server.close()


async def slt_publish(origin: Origin, stream_id: str, data: bytes, pace: float = 0.02) -> int:
    """srt-live-transmit sends ``data`` from its stdin, 10 TS-sized messages per step."""
    assert SLT is not None
    url = srt_url(origin, stream_id)
    proc = await asyncio.create_subprocess_exec(
        *(SLT, "-q", "-a:no", "-t:30", "-c:1316", "file://con", url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    await asyncio.sleep(0.5)  # live mode drops what it reads before it is connected
    # It sends whole 1316-byte messages only: pad with null packets (PID 0x1FFF) to fill one.
    data += NULL_PACKET * (-len(data) // 188 % 7) if len(data) % 188 == 0 else b""
    try:
        for i in range(0, len(data), 13160):
            proc.stdin.write(data[i : i + 13160])
            await proc.stdin.drain()
            await asyncio.sleep(pace)
        proc.stdin.close()
    except ConnectionError:  # the server dropped it, and it exited
        return await proc.wait()
    # It does not hang up at the end of its input: give the last messages time, then SIGINT
    # (a clean SRT shutdown, lingering until they are delivered).
    await asyncio.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    return await asyncio.wait_for(proc.wait(), 10)


def demuxed(data: bytes) -> list[tuple[Any, ...]]:
    demuxer = TSDemuxer()
    demuxer.receive_data(data)
    demuxer.receive_data(b"")
    out = []
    while not isinstance(event := demuxer.next_event(), StreamEnded):
        assert event is not NEED_DATA
        if isinstance(event, MediaUnit):
            out.append(fields(event))
    return out


def fields(unit: MediaUnit) -> tuple[Any, ...]:
    return (unit.kind, unit.codec, unit.pts, unit.dts, unit.keyframe, unit.is_config, unit.payload)


async def until(predicate: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_srt_live_transmit_delivers_every_unit(srt_origin: Origin) -> None:
    origin = srt_origin
    data = VECTOR.read_bytes()
    assert await slt_publish(origin, f"publish:{await origin.key()}", data) == 0
    await until(lambda: not origin.server.streams.sessions)
    units = await origin.captures[0].drain()
    assert origin.captures[0].session.publisher.protocol == "srt"
    expected = demuxed(data)
    got = [fields(u) for u in units]
    # the start gate releases in DTS order; the demuxer alone keeps the muxer's order
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert len([u for u in units if not u.is_config and u.kind.value == "video"]) == 60


async def test_garbage_drops_that_publisher_only(srt_origin: Origin) -> None:
    origin = srt_origin
    other = await origin.server.store.create_stream("other")
    good = asyncio.ensure_future(
        slt_publish(origin, f"publish:{other.stream_key}", VECTOR.read_bytes())
    )
    noise = random.Random(7).randbytes(200_000)
    await slt_publish(origin, f"publish:{await origin.key()}", noise, pace=0.01)
    assert await good == 0
    await until(lambda: not origin.server.streams.sessions)
    error = origin.server.streams.states["demo"].last_error
    assert error is not None and "no MPEG-TS sync (0x47 every 188 bytes)" in error
    assert origin.server.streams.states["other"].last_error is None
    by_stream = {c.session.stream_id: c for c in origin.captures}
    other_units = await by_stream["other"].drain()
    assert len([u for u in other_units if u.kind.value == "video" and not u.is_config]) == 60


@requires_ffmpeg
async def test_rotation_kick_and_takeover(srt_origin: Origin) -> None:
    origin = srt_origin
    streams = origin.server.streams
    old_key = await origin.key()
    first = await start_ffmpeg(ffmpeg_srt_args(srt_url(origin, f"publish:{old_key}"), seconds=60))
    async with aiohttp.ClientSession() as http:
        await until(lambda: "demo" in streams.sessions)
        async with http.post(f"{origin.http}/api/v1/streams/demo/key", headers=AUTH) as resp:
            assert resp.status == 200
            new_key = (await resp.json())["stream_key"]
        await asyncio.sleep(0.5)
        assert "demo" in streams.sessions  # a live publisher stays on after rotation
        async with http.delete(f"{origin.http}/api/v1/streams/demo/publisher", headers=AUTH) as r:
            assert r.status == 204
        assert await asyncio.wait_for(first.wait(), 10) != 0  # ffmpeg saw the connection end
        assert "demo" not in streams.sessions
        code, _ = await run_ffmpeg(
            ffmpeg_srt_args(srt_url(origin, f"publish:{old_key}"), seconds=2)
        )
        assert code != 0 and len(origin.captures) == 1  # the old key is refused now
        second = await start_ffmpeg(
            ffmpeg_srt_args(srt_url(origin, f"publish:{new_key}"), seconds=60)
        )
        await until(lambda: "demo" in streams.sessions)
        taking = streams.sessions["demo"]
        assert (
            await slt_publish(origin, f"#!::r=demo,m=publish,k={new_key}", VECTOR.read_bytes()) == 0
        )
        assert await asyncio.wait_for(second.wait(), 10) != 0  # taken over
        assert taking.ended and len(origin.captures) == 3
        assert streams.states["demo"].last_error is not None
        assert "taken over" in streams.states["demo"].last_error


async def test_admission_hook_refuses_then_admits_without_losing_the_start(
    srt_origin: Origin,
) -> None:
    origin = srt_origin
    answers = ["not today", None]
    asked: list[str] = []

    async def hook(stream_id: str, publisher: Publisher) -> str | None:
        asked.append(publisher.protocol)
        await asyncio.sleep(0.3)  # media keeps arriving while the hook decides
        return answers.pop(0)

    origin.server.streams.admission = hook
    data = VECTOR.read_bytes()
    await slt_publish(origin, f"publish:{await origin.key()}", data)
    assert not origin.captures and origin.server.streams.states["demo"].last_error is None
    assert await slt_publish(origin, f"publish:{await origin.key()}", data) == 0
    await until(lambda: not origin.server.streams.sessions)
    units = await origin.captures[0].drain()
    assert asked == ["srt", "srt"]
    assert sorted(map(fields, units), key=repr) == sorted(demuxed(data), key=repr)


async def test_stalled_caller_is_dropped(tmp_path: Path) -> None:
    """An SRT caller that connects and then sends nothing holds no session for long."""
    server = ShopcastServer(make_config(tmp_path, idle_timeout=1.0))
    await server.start()
    origin = Origin(server)
    assert SLT is not None
    url = srt_url(origin, f"publish:{await origin.key()}")
    proc = await asyncio.create_subprocess_exec(
        *(SLT, "-q", "-a:no", "-t:20", "file://con", url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await until(lambda: "demo" in server.streams.sessions, 10)
        await until(lambda: "demo" not in server.streams.sessions, 5)
        assert server.streams.states["demo"].last_error == "no data for 1 s"
        assert not server.srt.publishers
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have hung up already
            proc.kill()
        await proc.wait()
        await server.close()


@requires_ffmpeg
async def test_second_publisher_rejected_when_configured(tmp_path: Path) -> None:
    server = ShopcastServer(make_config(tmp_path, on_duplicate_publisher="reject"))
    await server.start()
    origin = Origin(server)
    url = srt_url(origin, f"publish:{await origin.key()}")
    first = await start_ffmpeg(ffmpeg_srt_args(url, seconds=30))
    try:
        await until(lambda: "demo" in server.streams.sessions, 10)
        code, _ = await run_ffmpeg(ffmpeg_srt_args(url, seconds=2))
        assert code != 0 and server.srt.handshake_refusals == 1
        assert first.returncode is None and len(origin.captures) == 1
    finally:
        await stop_ffmpeg(first)
        await server.close()
