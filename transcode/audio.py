"""Audio: AAC-LC passthrough, or decode → resample → AAC-LC 48 kHz stereo in a worker thread.

Either way timestamps come from a :class:`~transcode.timeline.SampleClock`: back-to-back
sample counts that follow the source clock, so audio cannot drift from video.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
from fractions import Fraction
from typing import Any

import av
from av.audio.codeccontext import AudioCodecContext
from av.codec.context import Flags

from ingest.codecs import AacConfig, BitstreamError, parse_audio_specific_config
from ingest.media import MediaKind, MediaUnit
from transcode.output import EncodedPacket, RenditionInfo, SinkBridge
from transcode.policy import LadderConfig
from transcode.stats import RenditionStats, TranscodeStats
from transcode.timeline import RepairedTime, SampleClock

log = logging.getLogger(__name__)

AUDIO_RENDITION = "audio"
OUTPUT_RATE = 48_000
OUTPUT_LAYOUT = "stereo"


def open_aac_encoder(rate: int, layout: str, bitrate: int) -> AudioCodecContext:
    """FFmpeg's native AAC-LC encoder with the AudioSpecificConfig in ``extradata``."""
    encoder = av.CodecContext.create("aac", "w")
    assert isinstance(encoder, AudioCodecContext)
    encoder.sample_rate = rate
    encoder.layout = layout
    encoder.format = "fltp"
    encoder.bit_rate = bitrate
    encoder.time_base = Fraction(1, rate)
    encoder.flags |= Flags.global_header
    encoder.open()
    return encoder


class AudioTranscoder:
    """The audio worker thread: any decodable source → AAC-LC at ``rate``/``layout``."""

    def __init__(
        self, rate: int, layout: str, bitrate: int, bridge: SinkBridge, stats: TranscodeStats
    ) -> None:
        self._encoder = open_aac_encoder(rate, layout, bitrate)
        #: AAC encoders put ``initial_padding`` samples first; packets come out that early.
        self.encoder_delay = 1024
        self.rate = rate
        self.layout = layout
        self.asc = bytes(self._encoder.extradata or b"")
        self._bridge = bridge
        self._stats = stats
        self._faults = stats.faults
        self._decoder: AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._resampler_input: tuple[str, str, int] | None = None
        self._clock = SampleClock(rate)
        self._produced = 0  # samples out of the resampler
        self._shift = 0  # output pts of sample ``_produced`` minus ``_produced``
        self._consumed = Fraction(0)  # input samples so far, in output samples
        self._arrival = 0.0
        self.info: RenditionInfo | None = None
        # Unbounded: the event loop must never block on it, and audio work is tiny.
        self._queue: queue.Queue[tuple[MediaUnit, RepairedTime | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="transcode-audio", daemon=True)
        self._thread.start()

    def submit(self, unit: MediaUnit, at: RepairedTime | None) -> None:
        self._queue.put((unit, at))

    def finish(self) -> None:
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            unit, at = item
            try:
                if unit.is_config:
                    self._configure(unit)
                elif at is not None:
                    self._decode(unit, at)
            except Exception as exc:
                self._faults.record("audio_error", repr(exc))
        try:
            self._resample(None)
            for packet in self._encoder.encode(None):
                self._emit(packet)
        except av.error.FFmpegError as exc:
            self._faults.record("audio_error", f"flush: {exc}")

    def _configure(self, unit: MediaUnit) -> None:
        if self._decoder is not None:
            self._decode_packet(None)
        try:
            decoder = av.CodecContext.create(unit.codec, "r")
        except (av.error.FFmpegError, ValueError) as exc:
            self._faults.record("unsupported_codec", f"audio codec {unit.codec!r}: {exc}")
            self._decoder = None
            return
        assert isinstance(decoder, AudioCodecContext)
        if unit.payload:
            decoder.extradata = unit.payload
        self._decoder = decoder

    def _decode(self, unit: MediaUnit, at: RepairedTime) -> None:
        if self._decoder is None:
            self._faults.record("missing_config", "audio before a usable codec configuration")
            return
        self._arrival = unit.arrival
        packet = av.Packet(unit.payload)
        packet.pts = round(at.pts * self.rate)
        packet.time_base = Fraction(1, self.rate)
        self._decode_packet(packet, at.pts)

    def _decode_packet(self, packet: av.Packet[Any] | None, at: Fraction | None = None) -> None:
        assert self._decoder is not None
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError as exc:
            self._faults.record("corrupt_audio", str(exc))
            return
        for frame in frames:
            samples = Fraction(frame.samples * self.rate, frame.sample_rate)
            if at is not None:
                pts = self._clock.stamp(at, samples)
                # Both counts carry the same fraction, so floors differ by a constant.
                self._shift = pts - math.floor(self._consumed)
                at += Fraction(frame.samples, frame.sample_rate)
            self._consumed += samples
            self._resample(frame)

    def _resample(self, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            shape = (frame.format.name, frame.layout.name, frame.sample_rate)
            if self._resampler is not None and shape != self._resampler_input:
                self._resample(None)  # the source format changed: drain the old resampler
                self._resampler = None
            if self._resampler is None:
                self._resampler = av.AudioResampler(
                    format="fltp", layout=self.layout, rate=self.rate, frame_size=1024
                )
                self._resampler_input = shape
        elif self._resampler is None:
            return
        assert self._resampler is not None
        for out in self._resampler.resample(frame):
            out.pts = self._produced + self._shift
            out.time_base = Fraction(1, self.rate)
            self._produced += out.samples
            for packet in self._encoder.encode(out):
                self._emit(packet)
        if frame is None:
            self._resampler = None

    def _emit(self, packet: av.Packet[Any]) -> None:
        if self.info is None:
            return
        pts = (packet.pts or 0) + self.encoder_delay
        if pts < 0:
            return
        if self._stats.rendition(self.info.name).count_out(packet.size, self._arrival):
            self._bridge.rendition(self.info)
        self._bridge.packet(
            EncodedPacket(
                rendition=self.info.name,
                pts=pts,
                dts=pts,
                duration=packet.duration or 1024,
                keyframe=True,
                payload=bytes(packet),
                arrival=self._arrival,
            )
        )


class AudioTrack:
    """The stream's audio rendition; runs on the event loop (passthrough is just re-stamping)."""

    def __init__(
        self,
        config: LadderConfig,
        bridge: SinkBridge,
        stats: TranscodeStats,
        like: RenditionInfo | None = None,
    ) -> None:
        self.config = config
        #: The format the rendition must have (a show's audio, when another input takes over):
        #: a source of another format is encoded into it.
        self._like = like
        self._bridge = bridge
        self._stats = stats
        self._faults = stats.faults
        self.info: RenditionInfo | None = None
        self.passthrough = False
        self._clock: SampleClock | None = None
        self._frame_length = 1024
        self._asc = b""
        self.transcoder: AudioTranscoder | None = None
        self._counter: RenditionStats | None = None  # the rendition's, once it emits

    def configure(self, unit: MediaUnit) -> None:
        """A codec configuration unit; the first one decides passthrough vs transcode."""
        if unit.payload == self._asc and self.info is not None:
            return
        aac: AacConfig | None = None
        if unit.codec == "aac":
            try:
                aac = parse_audio_specific_config(unit.payload)
            except BitstreamError as exc:
                self._faults.record("bad_config", f"audio: {exc}")
        like = self._like
        if self.info is None and like is not None and unit.payload != like.extradata:
            # Not the show's own format: encoded into it (the show's init segment stays valid).
            self.info = dataclasses.replace(
                like, passthrough=False, encoder_delay=1024, bitrate=self.config.audio_bitrate
            )
            self._start_transcoder(like.sample_rate, _layout(like.channels))
        elif self.info is None:
            if aac is not None and aac.is_lc_passthrough_ready:
                self.passthrough = True
                self._clock = SampleClock(aac.sample_rate)
                self._frame_length = aac.frame_length
                self.info = self._make_info(unit.payload, aac.sample_rate, aac.channels, True)
            else:
                self._start_transcoder(OUTPUT_RATE, OUTPUT_LAYOUT)
        elif self.passthrough:
            # The rendition's init segment is fixed: keep its format by transcoding into it.
            self._faults.record("audio_config_changed", "re-encoding into the original format")
            self.passthrough = False
            self._start_transcoder(self.info.sample_rate, _layout(self.info.channels))
        else:
            self._faults.record("audio_config_changed", "audio decoder reopened")
        self._asc = unit.payload
        if self.transcoder is not None:
            self.transcoder.submit(unit, None)

    def _start_transcoder(self, rate: int, layout: str) -> None:
        self.transcoder = AudioTranscoder(
            rate, layout, self.config.audio_bitrate, self._bridge, self._stats
        )
        if self.info is None:
            self.info = self._make_info(
                self.transcoder.asc, rate, 2 if layout == "stereo" else 1, False
            )
        self.transcoder.info = self.info

    def _make_info(self, asc: bytes, rate: int, channels: int, passthrough: bool) -> RenditionInfo:
        config = parse_audio_specific_config(asc)
        return RenditionInfo(
            name=AUDIO_RENDITION,
            kind=MediaKind.AUDIO,
            codec="aac",
            codec_string=config.codec_string,
            timescale=rate,
            extradata=asc,
            bitrate=self.config.audio_bitrate if not passthrough else 0,
            sample_rate=rate,
            channels=channels,
            passthrough=passthrough,
            encoder_delay=0 if passthrough else 1024,
        )

    def offer(self, unit: MediaUnit, at: RepairedTime) -> None:
        if self.info is None and unit.codec not in ("aac", "h264", "hevc", "av1"):
            # FLV carries MP3 (and PCM/Speex) without a configuration record: decode as is.
            self.configure(dataclasses.replace(unit, payload=b"", is_config=True))
        if self.info is None:
            self._faults.record("missing_config", "audio before its codec configuration")
            return
        if not self.passthrough:
            assert self.transcoder is not None
            self.transcoder.submit(unit, at)
            return
        assert self._clock is not None
        pts = self._clock.stamp_ratio(at.pts_n, at.den, self._frame_length)
        if pts < 0:
            return
        counter = self._counter
        if counter is None:  # held from the first packet on: no lookup per packet
            counter = self._counter = self._stats.rendition(self.info.name)
        if counter.count_out(len(unit.payload), unit.arrival):
            self._bridge.rendition(self.info)
        # Positional: keywords cost a third of the packet's making (one per unit).
        packet = EncodedPacket(
            self.info.name, pts, pts, self._frame_length, True, unit.payload, unit.arrival
        )
        self._bridge.packet(packet)

    def finish(self) -> None:
        if self.transcoder is not None:
            self.transcoder.finish()

    def join(self) -> None:
        if self.transcoder is not None:
            self.transcoder.join()


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"
