"""The slate: a still picture and silence, encoded once per rendition, looped while no input feeds
the show (see ``packager.slate`` for how it is played out).

One GOP (an IDR, then P frames that x264 codes as skips because the picture never changes) and
one silent AAC frame are encoded per rendition; playing the slate afterwards only re-times these
packets, so a stream on slate costs no encoding and nothing per viewer.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ingest.codecs import AvcConfig, annexb_to_avcc
from ingest.media import MediaKind
from ingest.shown import REASON_CHARS, shown
from transcode.audio import open_aac_encoder
from transcode.output import VIDEO_TIMESCALE, RenditionInfo
from transcode.policy import LadderConfig, RungPlan, gop_frames
from transcode.video.encoder import open_h264_encoder

#: 5×7 bitmap glyphs for the card's text: no font library, the same pixels everywhere.
_GLYPHS = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "C": ("01111", "10000", "10000", "10000", "10000", "10000", "01111"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "G": ("01111", "10000", "10000", "10011", "10001", "10001", "01111"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "I": ("01110", "00100", "00100", "00100", "00100", "00100", "01110"),
    "K": ("10001", "10010", "10100", "11000", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "W": ("10001", "10001", "10001", "10101", "10101", "10101", "01010"),
    "'": ("00100", "00100", "01000", "00000", "00000", "00000", "00000"),
    " ": ("00000",) * 7,
}
_BACKGROUND = (24, 28, 44)
_FOREGROUND = (245, 245, 245)
_ACCENT = (230, 60, 90)

#: Bitrate of a slate encoded for the source-sized (passthrough) rendition: a still costs little.
_PASSTHROUGH_SLATE_BITRATE = 1_000_000


class SlateError(ValueError):
    """A slate image that cannot be used (missing, undecodable)."""


def slate_card(width: int, height: int) -> np.ndarray:
    """The default slate: the "We'll be right back" card, an RGB24 array ``height``×``width``."""
    card = np.empty((height, width, 3), dtype=np.uint8)
    card[:] = _BACKGROUND
    # Two lines ("WE'LL BE" / "RIGHT BACK"), each at most 80 % of the width.
    lines = ["WE'LL BE", "RIGHT BACK"]
    longest = max(len(line) for line in lines)
    scale = max(1, (width * 8 // 10) // (longest * 6))
    line_height = 9 * scale
    top = (height - line_height * len(lines)) // 2
    for row, line in enumerate(lines):
        left = (width - len(line) * 6 * scale + scale) // 2
        y0 = top + row * line_height
        for col, char in enumerate(line):
            glyph = np.array([[c == "1" for c in bits] for bits in _GLYPHS[char]])
            block = np.kron(glyph, np.ones((scale, scale), dtype=bool))
            x0 = left + col * 6 * scale
            region = card[y0 : y0 + 7 * scale, x0 : x0 + 5 * scale]
            region[block[: region.shape[0], : region.shape[1]]] = _FOREGROUND
    bar = max(2, height // 100)
    y = top + line_height * len(lines) + scale * 2
    card[y : y + bar, width // 4 : width - width // 4] = _ACCENT
    return card


def load_slate_image(path: str | Path) -> av.VideoFrame:
    """The first picture of an image (or video) file, decoded with PyAV."""
    where = shown(str(path), REASON_CHARS)
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.reformat(format="rgb24")
    except (OSError, av.error.FFmpegError) as exc:
        raise SlateError(f"slate image {where} is unusable: {exc}") from None
    raise SlateError(f"slate image {where} has no picture")


@dataclass(frozen=True, slots=True)
class SlatePacket:
    """One pre-encoded slate access unit; times relative to its loop's start."""

    pts: int
    dts: int
    duration: int
    keyframe: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class SlateClip:
    """One rendition's slate: a GOP of video (if it has video) and a silent audio frame.

    ``video_info`` describes the slate's own bitstream; its ``extradata`` equals the live
    rendition's when the slate was encoded with the rung's own settings, else the slate needs
    an init segment of its own.
    """

    video_info: RenditionInfo | None
    video: tuple[SlatePacket, ...]
    loop_ticks: int  # one loop of the video GOP, in the video timescale
    audio_info: RenditionInfo | None
    silence: bytes  # one raw AAC frame of silence
    silence_samples: int


def _profile(codec_string: str) -> str:
    """x264 profile name of an ``avc1.PPCCLL`` codec string (High when unknown)."""
    profile_idc = codec_string[5:7].lower() if codec_string.startswith("avc1.") else ""
    return {"42": "baseline", "4d": "main"}.get(profile_idc, "high")


def _picture(source: av.VideoFrame | None, width: int, height: int) -> av.VideoFrame:
    """The slate picture at the rendition's size (letterboxed on the card's colour)."""
    if source is None:
        frame = av.VideoFrame.from_ndarray(slate_card(width, height), format="rgb24")
        return frame.reformat(format="yuv420p")
    scale = min(width / source.width, height / source.height)
    w = max(2, int(source.width * scale) // 2 * 2)
    h = max(2, int(source.height * scale) // 2 * 2)
    scaled = source.reformat(width=w, height=h, format="rgb24").to_ndarray()
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND
    y, x = (height - h) // 2, (width - w) // 2
    canvas[y : y + h, x : x + w] = scaled
    return av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")


def encode_slate_video(
    source: av.VideoFrame | None, info: RenditionInfo, config: LadderConfig
) -> tuple[RenditionInfo, tuple[SlatePacket, ...], int]:
    """One GOP of the slate for the video rendition ``info`` (blocking: run it off the loop).

    A re-encoded rung's slate uses that rung's own encoder settings, so its avcC (and with it
    the init segment) is the rung's; a passthrough rung gets x264 at the source's size.
    """
    fps = info.fps or Fraction(30)
    gop = gop_frames(config.segment_duration, fps)
    bitrate = info.bitrate or _PASSTHROUGH_SLATE_BITRATE
    plan = RungPlan(info.name, info.width, info.height, bitrate, _profile(info.codec_string))
    encoder = open_h264_encoder(plan, fps, gop, config)
    avcc = AvcConfig.from_annexb(bytes(encoder.extradata or b""))
    picture = _picture(source, info.width, info.height)
    out: list[SlatePacket] = []

    def ticks(slot: int) -> int:
        return slot * VIDEO_TIMESCALE * fps.denominator // fps.numerator

    def collect(packets: list[av.Packet[Any]]) -> None:
        for p in packets:
            assert p.pts is not None
            dts = p.dts if p.dts is not None else p.pts
            out.append(
                SlatePacket(
                    ticks(p.pts),
                    ticks(dts),
                    ticks(p.pts + 1) - ticks(p.pts),
                    p.is_keyframe,
                    annexb_to_avcc(bytes(p)),
                )
            )

    for slot in range(gop):
        frame = picture.reformat(format="yuv420p")
        frame.pts = slot
        frame.time_base = encoder.time_base
        frame.pict_type = (
            av.video.frame.PictureType.I if slot == 0 else av.video.frame.PictureType.NONE
        )
        collect(encoder.encode(frame))
    collect(encoder.encode(None))
    slate_info = RenditionInfo(
        name=info.name,
        kind=MediaKind.VIDEO,
        codec="h264",
        codec_string=avcc.codec_string,
        timescale=VIDEO_TIMESCALE,
        extradata=avcc.to_bytes(),
        bitrate=bitrate,
        width=info.width,
        height=info.height,
        fps=fps,
    )
    return slate_info, tuple(out), ticks(gop)


def encode_silence(info: RenditionInfo) -> tuple[RenditionInfo, bytes, int]:
    """One steady-state silent AAC-LC frame at the audio rendition's rate and channels."""
    layout = "mono" if info.channels == 1 else "stereo"
    rate = info.sample_rate or info.timescale
    encoder = open_aac_encoder(rate, layout, 64_000)
    samples = encoder.frame_size or 1024
    silent = np.zeros((1 if layout == "mono" else 2, samples), dtype=np.float32)
    packets: list[bytes] = []
    for i in range(8):  # past the encoder's priming: later frames are all the same
        frame = av.AudioFrame.from_ndarray(silent, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = i * samples
        packets.extend(bytes(p) for p in encoder.encode(frame))
    packets.extend(bytes(p) for p in encoder.encode(None))
    asc = bytes(encoder.extradata or b"") or info.extradata
    audio_info = RenditionInfo(
        name=info.name,
        kind=MediaKind.AUDIO,
        codec="aac",
        codec_string="mp4a.40.2",
        timescale=rate,
        extradata=asc,
        bitrate=64_000,
        sample_rate=rate,
        channels=1 if layout == "mono" else 2,
    )
    return audio_info, packets[len(packets) // 2], samples


def encode_slate(
    source: av.VideoFrame | None,
    video: RenditionInfo | None,
    audio: RenditionInfo | None,
    config: LadderConfig,
) -> SlateClip:
    """The slate of one rendition (video lead with muxed audio, or audio alone). Blocking."""
    video_info, packets, loop_ticks = (
        encode_slate_video(source, video, config) if video is not None else (None, (), 0)
    )
    audio_info, silence, samples = encode_silence(audio) if audio is not None else (None, b"", 0)
    return SlateClip(video_info, packets, loop_ticks, audio_info, silence, samples)


def _video_key(info: RenditionInfo | None) -> Hashable:
    """What a video slate's bits depend on (not the live source's own avcC)."""
    if info is None:
        return None
    return (info.name, info.width, info.height, info.fps, info.bitrate, _profile(info.codec_string))


def _audio_key(info: RenditionInfo | None) -> Hashable:
    """What the silent frame depends on: its rate and channel count."""
    if info is None:
        return None
    return (info.name, info.sample_rate or info.timescale, info.channels, info.extradata)


class SlateCache:
    """Slates already encoded for one ladder, by what their bits depend on (the image and the
    rendition's shape): shows whose renditions look alike share one encode, so a storm of 500
    publishers encodes one slate per distinct rendition, not 500 (each one x264 GOP, on the
    same cores as the event loop). Thread-safe; blocking on a miss (run it off the loop)."""

    def __init__(self, config: LadderConfig, size: int = 64) -> None:
        self.config = config
        self.size = size
        self.encoded = 0  # encodes done (misses), for tests and logs
        self._clips: OrderedDict[Hashable, SlateClip] = OrderedDict()
        self._encoding: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def _cached(self, key: Hashable) -> SlateClip | None:
        with self._guard:
            clip = self._clips.get(key)
            if clip is not None:
                self._clips.move_to_end(key)
            return clip

    def get(
        self, image: str, video: RenditionInfo | None, audio: RenditionInfo | None
    ) -> SlateClip:
        """The slate of one rendition for the slate ``image`` ("" for the card)."""
        # A replaced image file (same path) is a new key: its modification time is in it.
        stamp = os.stat(image).st_mtime_ns if image and os.path.exists(image) else 0
        key = (image, stamp, _video_key(video), _audio_key(audio))
        clip = self._cached(key)
        if clip is not None:
            return clip
        with self._guard:
            turn = self._encoding.setdefault(key, threading.Lock())
        with turn:  # one encode per key; the others wait for it
            clip = self._cached(key)
            if clip is not None:
                return clip
            picture = load_slate_image(image) if image else None
            clip = encode_slate(picture, video, audio, self.config)
            with self._guard:
                self._clips[key] = clip
                self.encoded += 1
                while len(self._clips) > self.size:
                    self._clips.popitem(last=False)
                self._encoding.pop(key, None)
        return clip
