"""The RTMP client role (``ingest.rtmp.client``) against the real server over TCP: a refused key
is a clear error, an accepted one carries the FLV writers' media into the stream's hub."""

from __future__ import annotations

import asyncio

import pytest

from ingest.media import MediaKind
from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher, RTMPPublishError
from ingest.rtmp.connection import MSG_AUDIO, MSG_VIDEO

from .conftest import Origin

pytestmark = pytest.mark.e2e
AVCC = bytes.fromhex("0164000dffe1001a6764000dacd943029e7f0110000003001000000303c0f14299600100")


async def test_unknown_key_is_refused(origin: Origin) -> None:
    publisher = RTMPPublisher("127.0.0.1", origin.server.rtmp.port, "live", "not-a-key")
    try:
        with pytest.raises(RTMPPublishError, match=r"NetStream\.Publish\.\w+"):
            await publisher.connect()
    finally:
        await publisher.close()
    assert [s.level for s in publisher.statuses] == ["error"]


async def test_published_media_reaches_the_hub(origin: Origin) -> None:
    publisher = RTMPPublisher("127.0.0.1", origin.server.rtmp.port, "live", await origin.key())
    await publisher.connect()
    try:
        assert [s.code for s in publisher.statuses] == ["NetStream.Publish.Start"]
        publisher.send_media(MSG_VIDEO, 0, flv.avc_sequence_header_body(AVCC))
        publisher.send_media(MSG_AUDIO, 0, flv.aac_sequence_header_body(b"\x11\x90"))
        for n in range(5):
            frame = b"\x00\x00\x00\x02\x65\x88" if n == 0 else b"\x00\x00\x00\x02\x41\x9a"
            publisher.send_media(MSG_VIDEO, 40 * n, flv.avc_video_body(frame, n == 0, 40))
            publisher.send_media(MSG_AUDIO, 40 * n, flv.aac_audio_body(b"\x21\x10"))
        await publisher.drain()
        for _ in range(200):  # 2 configs + 10 frames
            if origin.captures and origin.captures[0].reader.queued >= 12:
                break
            await asyncio.sleep(0.05)
    finally:
        await publisher.close()
    capture = origin.captures[0]
    while (unit := capture.reader.get_nowait()) is not None:
        capture.units.append(unit)
    video = capture.frames(MediaKind.VIDEO)
    assert [(u.dts, u.pts, u.keyframe) for u in video] == [
        (40 * n, 40 * n + 40, n == 0) for n in range(5)
    ]
    config = capture.config(MediaKind.VIDEO)
    assert config is not None and config.payload == AVCC
    assert len(capture.frames(MediaKind.AUDIO)) == 5
