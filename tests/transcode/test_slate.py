"""The slate's pictures and its one-time encode: a rung's slate shares the rung's avcC, a GOP is
one IDR and P frames, a configured image is decoded with PyAV, silence decodes to silence."""

from __future__ import annotations

import dataclasses
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.codecs import AvcConfig
from ingest.media import MediaKind
from transcode.output import RenditionInfo
from transcode.policy import LadderConfig, RungPlan
from transcode.slate import (
    SlateCache,
    SlateError,
    encode_silence,
    encode_slate,
    load_slate_image,
    slate_card,
)
from transcode.video.encoder import open_h264_encoder

CONFIG = LadderConfig()


def rung_info(width: int = 180, height: int = 320, bitrate: int = 200_000) -> RenditionInfo:
    """A re-encoded rung as the ladder describes it (its avcC from the rung's own encoder)."""
    plan = RungPlan(f"{width}p", width, height, bitrate, "high")
    avcc = AvcConfig.from_annexb(bytes(open_h264_encoder(plan, Fraction(30), 60, CONFIG).extradata))
    return RenditionInfo(
        plan.name,
        MediaKind.VIDEO,
        "h264",
        avcc.codec_string,
        90_000,
        avcc.to_bytes(),
        bitrate,
        width,
        height,
        Fraction(30),
    )


AUDIO = RenditionInfo(
    "audio", MediaKind.AUDIO, "aac", "mp4a.40.2", 48_000, b"\x11\x90", 128_000,
    sample_rate=48_000, channels=2,
)  # fmt: skip


def decode(info: RenditionInfo, payloads: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = info.extradata
    frames = []
    for payload in payloads:
        frames += [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(payload))]
    frames += [f.to_ndarray(format="rgb24") for f in decoder.decode(None)]
    return frames


def test_card_is_the_vertical_size_with_text() -> None:
    card = slate_card(360, 640)
    assert card.shape == (640, 360, 3) and card.dtype == np.uint8
    bright = (card.min(axis=2) > 200).sum()
    assert 1000 < bright < 360 * 640 // 10  # the letters, not a blank or white picture


def test_rung_slate_shares_the_rungs_init_and_is_one_gop() -> None:
    info = rung_info()
    clip = encode_slate(None, info, AUDIO, CONFIG)
    assert clip.video_info is not None
    assert clip.video_info.extradata == info.extradata  # decodable with the rung's init
    assert len(clip.video) == 60 and clip.loop_ticks == 180_000
    assert [p.keyframe for p in clip.video] == [True] + [False] * 59
    assert [p.dts for p in clip.video] == [n * 3000 for n in range(60)]
    # A still: P frames cost a fraction of the IDR.
    p_bytes = sum(len(p.payload) for p in clip.video[1:])
    assert p_bytes < 59 * len(clip.video[0].payload)
    frames = decode(info, [p.payload for p in clip.video])
    assert len(frames) == 60 and frames[0].shape == (320, 180, 3)


def test_passthrough_slate_gets_its_own_avcc() -> None:
    passthrough = RenditionInfo(
        "384p", MediaKind.VIDEO, "h264", "avc1.42c01e", 90_000, b"\x01\x42\xc0\x1e\xff\xe0\x00",
        0, 216, 384, Fraction(25), passthrough=True,
    )  # fmt: skip
    clip = encode_slate(None, passthrough, None, CONFIG)
    assert clip.video_info is not None
    assert clip.video_info.extradata != passthrough.extradata
    assert clip.video_info.codec_string.startswith("avc1.42")  # the source's profile kept
    assert len(clip.video) == 50 and clip.audio_info is None  # one 2 s GOP at 25 fps
    assert decode(clip.video_info, [p.payload for p in clip.video])[0].shape == (384, 216, 3)


def test_configured_image_is_decoded_and_letterboxed(tmp_path: Path) -> None:
    png = av.CodecContext.create("png", "w")
    png.width, png.height, png.pix_fmt = 64, 64, "rgb24"
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    picture[:] = (0, 200, 0)
    [packet] = png.encode(av.VideoFrame.from_ndarray(picture, format="rgb24"))
    path = tmp_path / "slate.png"
    path.write_bytes(bytes(packet))
    info = rung_info()
    clip = encode_slate(load_slate_image(path), info, None, CONFIG)
    first = decode(info, [clip.video[0].payload])[0]
    r, g, b = first[160, 90].astype(int)  # the middle: the green image (scaled to the width)
    assert g > 150 and r < 60 and b < 60
    r, g, b = first[5, 90].astype(int)  # above it: the card's background, not green
    assert g < 100


@pytest.mark.parametrize("content", [None, b"not an image at all"])
def test_unusable_image_is_a_clear_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "slate.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SlateError, match="slate image"):
        load_slate_image(path)


def test_silence_decodes_to_silence() -> None:
    info, frame, samples = encode_silence(AUDIO)
    assert samples == 1024 and info.sample_rate == 48_000 and info.channels == 2
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = info.extradata
    out = []
    for _ in range(3):
        out += [f.to_ndarray() for f in decoder.decode(av.Packet(frame))]
    assert out and max(float(np.abs(a).max()) for a in out) < 1e-4


def test_slate_cache_encodes_alike_renditions_once(tmp_path: Path) -> None:
    """Shows whose renditions look alike share one encode (a storm encodes one slate, not N);
    another size, another image or a replaced image file is another encode."""
    cache = SlateCache(CONFIG)
    info = rung_info()
    # Another show's source: same shape, its own avcC (the live source's, not the slate's).
    other_source = dataclasses.replace(info, extradata=info.extradata + b"\x00")
    results = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(cache.get("", i, AUDIO)))
        for i in (info, other_source, info, other_source)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.encoded == 1 and len({id(clip) for clip in results}) == 1
    assert results[0].video_info is not None
    assert results[0].video_info.extradata == info.extradata  # still the rung's own init
    cache.get("", rung_info(width=144, height=256), AUDIO)
    assert cache.encoded == 2
    path = tmp_path / "slate.png"
    png = av.CodecContext.create("png", "w")
    png.width, png.height, png.pix_fmt = 16, 16, "rgb24"
    [packet] = png.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), "rgb24"))
    path.write_bytes(bytes(packet))
    cache.get(str(path), info, AUDIO)
    cache.get(str(path), info, AUDIO)
    assert cache.encoded == 3
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    cache.get(str(path), info, AUDIO)
    assert cache.encoded == 4


def test_slate_cache_is_bounded() -> None:
    cache = SlateCache(CONFIG, size=2)
    for width in (144, 180, 216):
        cache.get("", None, dataclasses.replace(AUDIO, name=f"a{width}"))
    cache.get("", None, dataclasses.replace(AUDIO, name="a144"))  # evicted: encoded again
    assert cache.encoded == 4
