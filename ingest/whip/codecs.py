"""Encoded frames out of aiortc: pass-through "decoders" for H.264, VP8 and Opus.

Why a decoder hook: aiortc's ``RTCRtpReceiver`` does RTP, NACK, the jitter buffer and
depacketization, then hands each complete frame to ``aiortc.codecs.get_decoder(codec)`` in its
own worker thread and queues whatever ``decode()`` returns on the remote track. We keep all of
that, but swap the decoder for one that returns the frame still *encoded*: the transcoder decodes
every stream once anyway, so decoding here and re-encoding for the hub would only cost CPU and
quality. Opus goes onto the hub as Opus too; the transcoder turns it into AAC for HLS.

The hook is per codec object: :func:`use_encoded_frames` marks the negotiated codecs of one
peer connection; any other aiortc peer connection in the process still gets aiortc's decoders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, rtcrtpreceiver
from aiortc.codecs import get_decoder as _aiortc_get_decoder
from aiortc.codecs import is_rtx
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from ingest.codecs import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    AvcConfig,
    H264Error,
    annexb_to_avcc,
    iter_annexb,
)
from ingest.media import MediaKind

#: RTP clock of every WebRTC video codec (RFC 6184, RFC 7741) and of Opus (RFC 7587).
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
#: Codecs a WHIP offer may use, in our order of preference (H.264 can skip the re-encode).
SUPPORTED_VIDEO = ("h264", "vp8")
SUPPORTED_AUDIO = ("opus",)

_MARK = "_shopcast_whip_decoder"


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded access unit as the receiver's worker thread hands it to the session.

    ``timestamp`` counts ``clock`` ticks from the track's first RTP timestamp (aiortc unwraps
    it). ``payload`` is AVCC (4-byte lengths) for H.264, the VP8 frame, or the Opus packet;
    ``config`` is set when the codec configuration (the avcC record) is new.
    """

    kind: MediaKind
    codec: str
    timestamp: int
    clock: int
    keyframe: bool
    payload: bytes
    arrival: float
    config: bytes | None = None
    width: int | None = None
    height: int | None = None


class H264Passthrough(Decoder):
    """Annex B access unit → AVCC; SPS/PPS become an avcC record whenever they change."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._avcc: bytes | None = None

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        nals = list(iter_annexb(encoded_frame.data))
        sps = [n for n in nals if n[0] & 0x1F == NAL_SPS]
        pps = [n for n in nals if n[0] & 0x1F == NAL_PPS]
        config = None
        if sps and pps:
            try:
                avcc = AvcConfig.from_parameter_sets(sps[:1], pps[:1]).to_bytes()
            except H264Error:
                avcc = None  # an unreadable SPS: no record, the session asks for a keyframe
            if avcc is not None and avcc != self._avcc:
                self._avcc = config = avcc
        payload = annexb_to_avcc(encoded_frame.data)
        if not payload:
            return []
        return [
            EncodedFrame(
                MediaKind.VIDEO,
                "h264",
                encoded_frame.timestamp,
                VIDEO_CLOCK,
                any(n[0] & 0x1F == NAL_IDR for n in nals),
                payload,
                self._clock(),
                config,
            )
        ]


class Vp8Passthrough(Decoder):
    """VP8 frames as they are; a key frame's header gives the picture size (RFC 6386 §9.1)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        data = encoded_frame.data
        if len(data) < 3:
            return []
        keyframe = not data[0] & 1
        width = height = None
        if keyframe and len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
            width = int.from_bytes(data[6:8], "little") & 0x3FFF
            height = int.from_bytes(data[8:10], "little") & 0x3FFF
        return [
            EncodedFrame(
                MediaKind.VIDEO,
                "vp8",
                encoded_frame.timestamp,
                VIDEO_CLOCK,
                keyframe,
                data,
                self._clock(),
                width=width,
                height=height,
            )
        ]


class OpusPassthrough(Decoder):
    """Opus packets as they are (RFC 7587: the RTP clock is 48 kHz whatever the input rate)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        if not encoded_frame.data:
            return []
        return [
            EncodedFrame(
                MediaKind.AUDIO,
                "opus",
                encoded_frame.timestamp,
                AUDIO_CLOCK,
                True,
                encoded_frame.data,
                self._clock(),
            )
        ]


DecoderFactory = Callable[[], Decoder]


def decoder_factory(codec: RTCRtpCodecParameters) -> DecoderFactory | None:
    """What replaces aiortc's decoder for ``codec``; ``None`` for codecs we do not take."""
    name = codec.name.lower()
    if name == "h264":
        return lambda: H264Passthrough(time.time)
    if name == "vp8":
        return lambda: Vp8Passthrough(time.time)
    if name == "opus":
        return lambda: OpusPassthrough(time.time)
    return None


_install_lock = threading.Lock()


def _get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    factory: DecoderFactory | None = getattr(codec, _MARK, None)
    return factory() if factory is not None else _aiortc_get_decoder(codec)


def use_encoded_frames(pc: RTCPeerConnection) -> None:
    """Make ``pc``'s receivers yield :class:`EncodedFrame` instead of decoded frames.

    Call after ``setRemoteDescription`` (the negotiated codecs exist then) and before the
    connection starts its receivers. The receiver looks its decoder up by codec, in its worker
    thread, with ``rtcrtpreceiver.get_decoder``: that lookup is wrapped once per process and
    answers with ours only for codec objects marked here.
    """
    with _install_lock:
        namespace = vars(rtcrtpreceiver)
        if namespace["get_decoder"] is not _get_decoder:
            namespace["get_decoder"] = _get_decoder
    for transceiver in pc.getTransceivers():
        for codec in transceiver._codecs:
            if is_rtx(codec):
                continue
            factory = decoder_factory(codec)
            if factory is not None:
                setattr(codec, _MARK, factory)
