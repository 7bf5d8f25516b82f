"""Debian ffmpeg publishes RTMP into a real shopcast origin; the hub must get every frame."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import av
import pytest

from ingest.codecs import parse_audio_specific_config, parse_avcc
from ingest.media import MediaKind
from ingest.rtmp.chunk_py import ChunkStreamReader, ChunkWriter
from shopcast.server import ShopcastServer

from .conftest import (
    API_TOKEN,
    Capture,
    Origin,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    run_ffmpeg,
)

pytestmark = [pytest.mark.e2e, requires_ffmpeg]


async def status(origin: Origin, stream_id: str = "demo") -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{origin.http}/api/v1/streams/{stream_id}",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


def assert_matches_file(capture: Capture, flv: Path) -> None:
    """Every packet ffmpeg wrote to the reference FLV arrived in the hub, bit for bit."""
    with av.open(str(flv)) as container:
        expected = {MediaKind.VIDEO: [], MediaKind.AUDIO: []}
        extradata = {}
        for stream in container.streams:
            kind = MediaKind.VIDEO if stream.type == "video" else MediaKind.AUDIO
            extradata[kind] = bytes(stream.codec_context.extradata or b"")
        for packet in container.demux():
            if packet.size == 0:
                continue
            kind = MediaKind.VIDEO if packet.stream.type == "video" else MediaKind.AUDIO
            expected[kind].append((packet.dts, packet.pts, packet.is_keyframe, bytes(packet)))
    for kind, packets in expected.items():
        got = [(u.dts, u.pts, u.keyframe, u.payload) for u in capture.frames(kind)]
        if kind is MediaKind.AUDIO:
            got = [(d, p, True, b) for d, p, _, b in got]
            packets = [(d, p, True, b) for d, p, _, b in packets]
        assert len(got) == len(packets), f"{kind}: {len(got)} units for {len(packets)} packets"
        assert got == packets
        if packets:
            cfg = capture.config(kind)
            assert cfg is not None and cfg.payload == extradata[kind]


async def test_publish_720p_every_frame_and_live_status(origin: Origin, tmp_path: Path) -> None:
    ref = tmp_path / "ref.flv"
    args = ffmpeg_publish_args(
        origin.rtmp_url(await origin.key()), seconds=5, size="720x1280", realtime=True, copy_to=ref
    )
    proc = asyncio.ensure_future(run_ffmpeg(args))
    live = None
    for _ in range(200):
        await asyncio.sleep(0.05)
        st = await status(origin)
        if st["state"] == "live" and (st["ingest"]["video"]["fps"] or 0) > 0:
            await asyncio.sleep(1.5)  # let the fps/bitrate window fill
            live = await status(origin)
            break
    code, err = await proc
    assert code == 0, err
    assert live is not None, "stream never reported live"
    video = live["ingest"]["video"]
    assert (video["codec"], video["width"], video["height"]) == ("h264", 720, 1280)
    assert video["fps"] == pytest.approx(30, abs=1)
    audio = live["ingest"]["audio"]
    assert (audio["codec"], audio["sample_rate"]) == ("aac", 48000)
    assert live["ingest"]["bitrate"] > 0 and live["ingest"]["protocol"] == "rtmp"

    [capture] = origin.captures
    await capture.drain()
    assert len(capture.frames(MediaKind.VIDEO)) == 150  # 5 s at 30 fps
    assert_matches_file(capture, ref)
    dts = [u.dts for u in capture.frames(MediaKind.VIDEO)]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    avcc = parse_avcc(capture.config(MediaKind.VIDEO).payload)
    assert (avcc.sps_info.width, avcc.sps_info.height) == (720, 1280)
    asc = parse_audio_specific_config(capture.config(MediaKind.AUDIO).payload)
    assert (asc.sample_rate, asc.channels) == (48000, 1)
    assert (await status(origin))["state"] == "offline"


async def test_bframes_keep_composition_offsets(origin: Origin, tmp_path: Path) -> None:
    ref = tmp_path / "ref.flv"
    code, err = await run_ffmpeg(
        ffmpeg_publish_args(origin.rtmp_url(await origin.key()), bframes=2, copy_to=ref)
    )
    assert code == 0, err
    [capture] = origin.captures
    await capture.drain()
    frames = capture.frames(MediaKind.VIDEO)
    assert len(frames) == 60
    assert all(u.pts >= u.dts for u in frames)
    assert any(u.pts != u.dts for u in frames)
    dts = [u.dts for u in frames]
    assert dts == sorted(dts)
    assert_matches_file(capture, ref)


@pytest.mark.parametrize(
    ("video", "audio"), [(False, True), (True, False)], ids=["audio-only", "video-only"]
)
async def test_single_track_publish(
    origin: Origin, tmp_path: Path, video: bool, audio: bool
) -> None:
    ref = tmp_path / "ref.flv"
    code, err = await run_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(await origin.key()), video=video, audio=audio, copy_to=ref
        )
    )
    assert code == 0, err
    [capture] = origin.captures
    await capture.drain()
    assert bool(capture.frames(MediaKind.VIDEO)) is video
    assert bool(capture.frames(MediaKind.AUDIO)) is audio
    assert_matches_file(capture, ref)


async def _rechunking_proxy(target_port: int, chunk_size: int) -> asyncio.Server:
    """Sits between ffmpeg and the origin and re-sends ffmpeg's messages at ``chunk_size``."""

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target_port)

        async def downstream() -> None:
            while data := await s_reader.read(65536):
                c_writer.write(data)
            c_writer.close()

        async def upstream() -> None:
            s_writer.write(await c_reader.readexactly(1 + 1536))  # C0+C1: S0+S1+S2 come back
            s_writer.write(await c_reader.readexactly(1536))  # C2
            reader, writer = ChunkStreamReader(), ChunkWriter()
            s_writer.write(writer.write(2, 1, 0, 0, chunk_size.to_bytes(4, "big")))
            writer.chunk_size = chunk_size
            while data := await c_reader.read(65536):
                reader.feed(data)
                while (msg := reader.next_message()) is not None:
                    if msg.type_id != 1:  # ffmpeg's own Set Chunk Size is replaced by ours
                        s_writer.write(writer.write(*msg))
                await s_writer.drain()
            s_writer.close()

        await asyncio.gather(downstream(), upstream(), return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("chunk_size", [16, 65536])
async def test_small_and_large_chunk_sizes(origin: Origin, tmp_path: Path, chunk_size: int) -> None:
    proxy = await _rechunking_proxy(origin.server.rtmp.port, chunk_size)
    port = proxy.sockets[0].getsockname()[1]
    ref = tmp_path / "ref.flv"
    url = f"rtmp://127.0.0.1:{port}/live/{await origin.key()}"
    try:
        code, err = await run_ffmpeg(ffmpeg_publish_args(url, bframes=2, copy_to=ref))
    finally:
        proxy.close()
    assert code == 0, err
    [capture] = origin.captures
    await capture.drain()
    assert_matches_file(capture, ref)


async def test_wrong_key_refused(origin: Origin) -> None:
    before = await origin.server.store.list_streams()
    code, _ = await run_ffmpeg(ffmpeg_publish_args(origin.rtmp_url("not-the-key")))
    assert code != 0
    assert origin.captures == []
    assert await origin.server.store.list_streams() == before
    assert (await status(origin))["state"] == "offline"


async def test_wrong_app_refused(origin: Origin) -> None:
    code, _ = await run_ffmpeg(
        ffmpeg_publish_args(origin.rtmp_url(await origin.key(), app="other"))
    )
    assert code != 0
    assert origin.captures == []


async def test_second_publisher_takes_over(origin: Origin) -> None:
    url = origin.rtmp_url(await origin.key())
    first = asyncio.ensure_future(run_ffmpeg(ffmpeg_publish_args(url, seconds=30, realtime=True)))
    while not origin.captures:
        await asyncio.sleep(0.05)
    code2, err2 = await run_ffmpeg(ffmpeg_publish_args(url, seconds=1))
    code1, _ = await asyncio.wait_for(first, 15)  # the first one was disconnected long before 30 s
    assert code2 == 0, err2
    assert code1 != 0
    assert len(origin.captures) == 2
    old, new = origin.captures
    assert old.session.ended and new.session.ended
    st = await status(origin)
    assert "taken over" in (st["last_error"] or "")
    await new.drain()
    assert len(new.frames(MediaKind.VIDEO)) == 30


async def test_second_publisher_rejected_when_configured(tmp_path: Path) -> None:
    server = ShopcastServer(make_config(tmp_path, on_duplicate_publisher="reject"))
    await server.start()
    origin = Origin(server)
    try:
        url = origin.rtmp_url(await origin.key())
        first = asyncio.ensure_future(
            run_ffmpeg(ffmpeg_publish_args(url, seconds=3, realtime=True))
        )
        while not origin.captures:
            await asyncio.sleep(0.05)
        code2, _ = await run_ffmpeg(ffmpeg_publish_args(url, seconds=1))
        assert code2 != 0
        code1, err1 = await first
        assert code1 == 0, err1
        assert len(origin.captures) == 1
    finally:
        await server.close()


async def test_bad_client_disconnected_other_stream_unharmed(
    origin: Origin, tmp_path: Path
) -> None:
    """Garbage and bound violations drop only that client; a concurrent real publish is intact."""
    await origin.server.store.create_stream("other")
    ref = tmp_path / "ref.flv"
    good = asyncio.ensure_future(
        run_ffmpeg(
            ffmpeg_publish_args(
                origin.rtmp_url(await origin.key("other")), seconds=3, realtime=True, copy_to=ref
            )
        )
    )
    port = origin.server.rtmp.port
    c1 = bytes([3]) + bytes(1536)
    attacks = [
        b"\x06" + bytes(3072),  # unknown RTMP version
        c1 + bytes(1536) + ChunkWriter().write(2, 1, 0, 0, (0x7FFFFFFF).to_bytes(4, "big")),
        c1 + bytes(1536) + b"\x03" + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x14" + bytes(4),
        c1 + bytes(1536) + b"\x43\x00\x00\x00" + bytes(64),  # type-1 header on an unknown stream
    ]
    for attack in attacks:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(attack)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)  # the server closes on us
        assert len(data) <= 1 + 1536 * 2
        writer.close()
    code, err = await good
    assert code == 0, err
    [capture] = origin.captures
    await capture.drain()
    assert_matches_file(capture, ref)


async def test_silent_and_stalled_clients_time_out(tmp_path: Path) -> None:
    server = ShopcastServer(make_config(tmp_path, handshake_timeout=0.5, idle_timeout=0.6))
    await server.start()
    try:
        loop = asyncio.get_running_loop()
        for prefix in (b"", bytes([3]) + bytes(1536)):  # nothing at all; C0+C1 then a stall
            reader, writer = await asyncio.open_connection("127.0.0.1", server.rtmp.port)
            writer.write(prefix)
            started = loop.time()
            await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server hung up
            assert loop.time() - started < 3
            writer.close()
        assert not server.rtmp.connections
    finally:
        await server.close()
