"""Encoded frames out of aiortc: pass-through "decoders" for H.264 and VP8, Opus → AAC-LC.

Why a decoder hook: aiortc's ``RTCRtpReceiver`` does RTP, NACK, the jitter buffer and
depacketization, then hands each complete frame to ``aiortc.codecs.get_decoder(codec)`` in its
own worker thread and queues whatever ``decode()`` returns on the remote track. We keep all of
that, but swap the decoder for one that returns the frame still *encoded*: the transcoder decodes
every stream once anyway, so decoding here and re-encoding for the hub would only cost CPU and
quality. Opus is the exception: HLS wants AAC, so it is decoded and re-encoded to AAC-LC 48 kHz
here, in that same worker thread (never on the event loop).

The hook is per codec object: :func:`use_encoded_frames` marks the negotiated codecs of one
peer connection; any other aiortc peer connection in the process still gets aiortc's decoders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from aiortc import RTCPeerConnection, rtcrtpreceiver
from aiortc.codecs import get_decoder as _aiortc_get_decoder
from aiortc.codecs import is_rtx
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from ingest.media import MediaKind
from transcode.audio import open_aac_encoder
from transcode.bitstream import NAL_PPS, NAL_SPS, AvcConfig, annexb_to_avcc, iter_annexb

#: RTP clock of every WebRTC video codec (RFC 6184, RFC 7741) and of Opus (RFC 7587).
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
NAL_IDR = 5
#: Opus → AAC output; the transcoder passes AAC-LC 48 kHz stereo through untouched.
AAC_LAYOUT = "stereo"
AAC_FRAME = 1024
#: Codecs a WHIP offer may use, in our order of preference (H.264 can skip the re-encode).
SUPPORTED_VIDEO = ("h264", "vp8")
SUPPORTED_AUDIO = ("opus",)

_MARK = "_shopcast_whip_decoder"


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded access unit as the receiver's worker thread hands it to the session.

    ``timestamp`` counts ``clock`` ticks from the track's first RTP timestamp (aiortc unwraps
    it). ``payload`` is AVCC (4-byte lengths) for H.264, the VP8 frame, or a raw AAC frame;
    ``config`` is set when the codec configuration (avcC, AudioSpecificConfig) is new.
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
        sps = [n for n in nals if n[0] & 0x1F == NAL_SPS and len(n) >= 4]
        pps = [n for n in nals if n[0] & 0x1F == NAL_PPS]
        config = None
        if sps and pps:
            avcc = AvcConfig(sps[0][1], sps[0][2], sps[0][3], 4, (sps[0],), (pps[0],)).to_bytes()
            if avcc != self._avcc:
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


class OpusToAac(Decoder):
    """Opus → PCM → 1024-sample frames → AAC-LC 48 kHz stereo, timestamps on the RTP clock.

    Output times are back-to-back sample counts from the first packet's RTP time, so AAC frames
    never drift; a gap in the RTP times (loss the jitter buffer gave up on, DTX) restarts the
    count at the new time.
    """

    #: A jump this large (samples, 60 ms) between expected and received time restarts the count.
    _RESYNC = 2880

    def __init__(self, bitrate: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._decoder = av.CodecContext.create("libopus", "r")
        self._encoder = open_aac_encoder(AUDIO_CLOCK, AAC_LAYOUT, bitrate)
        self._asc: bytes | None = bytes(self._encoder.extradata or b"")
        self._resampler: av.AudioResampler | None = None
        self._base = 0  # RTP time of the first sample fed since the last (re)start
        self._fed = 0  # samples fed into the resampler since then
        self._produced = 0  # samples out of the resampler since then

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = Fraction(1, AUDIO_CLOCK)
        out: list[Any] = []
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError:
            return out  # a damaged packet: the next one decodes on its own
        for frame in frames:
            assert isinstance(frame, av.AudioFrame)
            if (
                self._resampler is None
                or abs(encoded_frame.timestamp - (self._base + self._fed)) > self._RESYNC
            ):
                self._resampler = av.AudioResampler(
                    format="fltp", layout=AAC_LAYOUT, rate=AUDIO_CLOCK, frame_size=AAC_FRAME
                )
                self._base = encoded_frame.timestamp
                self._fed = self._produced = 0
            self._fed += frame.samples
            for chunk in self._resampler.resample(frame):
                chunk.pts = self._base + self._produced
                chunk.time_base = Fraction(1, AUDIO_CLOCK)
                self._produced += chunk.samples
                for aac in self._encoder.encode(chunk):
                    if aac.pts is None:
                        continue
                    out.append(
                        EncodedFrame(
                            MediaKind.AUDIO,
                            "aac",
                            aac.pts,
                            AUDIO_CLOCK,
                            True,
                            bytes(aac),
                            self._clock(),
                            self._asc,
                        )
                    )
                    self._asc = None
        return out


DecoderFactory = Callable[[], Decoder]


def decoder_factory(codec: RTCRtpCodecParameters, aac_bitrate: int) -> DecoderFactory | None:
    """What replaces aiortc's decoder for ``codec``; ``None`` for codecs we do not take."""
    name = codec.name.lower()
    if name == "h264":
        return lambda: H264Passthrough(time.time)
    if name == "vp8":
        return lambda: Vp8Passthrough(time.time)
    if name == "opus":
        return lambda: OpusToAac(aac_bitrate, time.time)
    return None


_install_lock = threading.Lock()


def _get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    factory: DecoderFactory | None = getattr(codec, _MARK, None)
    return factory() if factory is not None else _aiortc_get_decoder(codec)


def use_encoded_frames(pc: RTCPeerConnection, aac_bitrate: int) -> None:
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
            factory = decoder_factory(codec, aac_bitrate)
            if factory is not None:
                setattr(codec, _MARK, factory)
