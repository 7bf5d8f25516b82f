"""One rung's encoder thread: shaped frames in, H.264 (AVCC) packets out to the sink."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from ingest.codecs import AvcConfig, annexb_to_avcc
from ingest.media import MediaKind
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, RenditionInfo, SinkBridge
from transcode.policy import LadderConfig, RungPlan, VerticalPolicy
from transcode.stats import TranscodeStats
from transcode.video.shaper import FrameShaper

#: Frames in flight per rung: enough to keep the encoder busy, little added latency.
_RUNG_QUEUE = 4


@dataclass(frozen=True, slots=True)
class PickedFrame:
    """A decoded frame placed in output slot ``slot``; ``idr`` is decided once for all rungs."""

    frame: av.VideoFrame
    slot: int
    arrival: float
    idr: bool
    #: The source frame's pts (90 kHz ticks) when the slot shows it first and a passthrough
    #: rung is live: the rung then stamps it with the source's time, as the passthrough does.
    source_ticks: int | None = None


def open_h264_encoder(
    plan: RungPlan, fps: Fraction, gop: int, config: LadderConfig
) -> VideoCodecContext:
    """libx264 for one rung: capped VBR, zerolatency, fixed GOP, IDRs only where we force them."""
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, VideoCodecContext)
    encoder.width = plan.width
    encoder.height = plan.height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = 1 / fps
    encoder.framerate = fps
    encoder.bit_rate = plan.bitrate
    encoder.gop_size = gop
    encoder.thread_count = config.encoder_threads
    # Global header: SPS/PPS go to extradata (once, for the init segment), not in-band.
    encoder.flags |= Flags.global_header
    maxrate = int(plan.bitrate * config.maxrate_factor)
    encoder.options = {
        "preset": config.preset,
        "tune": "zerolatency",
        "profile": plan.profile,
        "maxrate": str(maxrate),
        "bufsize": str(int(maxrate * config.bufsize_seconds)),
        "forced-idr": "1",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
    }
    encoder.open()
    return encoder


class RungEncoder:
    """One rung's worker thread: shape each picked frame, encode it, emit AVCC packets.

    A rung may scale from a larger rung's picture instead of the source's (``add_child``): the
    parent hands its shaped frame on before encoding it, and ends its children after its own
    last frame. Only root rungs (no parent) are fed and finished by the decoder.
    """

    def __init__(
        self,
        plan: RungPlan,
        fps: Fraction,
        gop: int,
        config: LadderConfig,
        vertical: Callable[[], VerticalPolicy],
        bridge: SinkBridge,
        stats: TranscodeStats,
        prefix: str,
    ) -> None:
        self.plan = plan
        self.fps = fps
        self._vertical = vertical
        self._bridge = bridge
        self._stats = stats.rendition(plan.name)
        self._faults = stats.faults
        self._prefix = prefix
        self._encoder = open_h264_encoder(plan, fps, gop, config)
        avcc = AvcConfig.from_annexb(bytes(self._encoder.extradata or b""))
        self.info = RenditionInfo(
            name=plan.name,
            kind=MediaKind.VIDEO,
            codec="h264",
            codec_string=avcc.codec_string,
            timescale=VIDEO_TIMESCALE,
            extradata=avcc.to_bytes(),
            bitrate=plan.bitrate,
            width=plan.width,
            height=plan.height,
            fps=fps,
        )
        self.shaper = FrameShaper(plan.width, plan.height, config.scale_flags)
        #: The rung whose shaped frames this one scales from (None: from the decoded source).
        self.parent: RungEncoder | None = None
        self._children: list[RungEncoder] = []
        self._announced = False
        self._arrivals: dict[int, float] = {}
        self._source_ticks: dict[int, int] = {}
        self._queue: queue.Queue[PickedFrame | None] = queue.Queue(maxsize=_RUNG_QUEUE)
        self._thread = threading.Thread(
            target=self._run, name=f"transcode-{plan.name}", daemon=True
        )
        self._thread.start()

    def add_child(self, child: RungEncoder) -> None:
        """``child`` scales from this rung's picture from now on (before the first frame)."""
        child.parent = self
        self._children.append(child)

    def submit(self, item: PickedFrame) -> None:
        """Queue a frame; blocks while the rung is ``_RUNG_QUEUE`` frames behind."""
        self._queue.put(item)

    def finish(self) -> None:
        """Flush the encoder after the queued frames and end the thread."""
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def _slot_ticks(self, slot: int) -> int:
        return slot * VIDEO_TIMESCALE * self.fps.denominator // self.fps.numerator

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._encode(item)
            except Exception as exc:  # keep consuming: the decoder must never block on us
                self._faults.record("encoder_error", f"{self.plan.name}: {exc!r}")
        for child in self._children:  # after every frame handed on to them
            child.finish()
        try:
            for packet in self._encoder.encode(None):
                self._emit(packet)
        except av.error.FFmpegError as exc:
            self._faults.record("encoder_error", f"{self.plan.name} flush: {exc}")

    def _encode(self, item: PickedFrame) -> None:
        frame = self.shaper.shape(item.frame, self._vertical())
        frame.pts = item.slot
        frame.time_base = self._encoder.time_base
        # Decoded frames keep their source picture type, and libx264 obeys it: reset all but
        # the IDR slots, which are forced so that every rung cuts at the same PTS.
        frame.pict_type = PictureType.I if item.idr else PictureType.NONE
        # Handed on once this thread is done writing to the frame: from here on the children's
        # scalers and our encoder only read it (no copy, no race).
        for child in self._children:
            child.submit(replace(item, frame=frame))
        self._arrivals[item.slot] = item.arrival
        if item.source_ticks is not None:
            self._source_ticks[item.slot] = item.source_ticks
        self._stats.frames_in += 1
        for packet in self._encoder.encode(frame):
            self._emit(packet)

    def _emit(self, packet: av.Packet[Any]) -> None:
        if packet.pts is None:
            return
        slot = packet.pts
        arrival = self._arrivals.pop(slot, time.time())
        # Beside a passthrough rung, a frame keeps its source time (the slot grid is up to half
        # a frame off it): every rendition then has the same part and segment boundaries, which
        # a player switching renditions relies on (hls.js stops loading when the new
        # rendition's buffered end falls a few ms short of the fragment end it expects).
        # zerolatency has no B-frames (dts == pts); repeated slots stay on the grid, which
        # lies between the neighbouring source times, so timestamps still increase.
        source = self._source_ticks.pop(slot, None)
        pts = self._slot_ticks(slot) if source is None else source
        dts = pts if packet.dts is None or packet.dts == slot else self._slot_ticks(packet.dts)
        payload = annexb_to_avcc(bytes(packet))
        if not self._announced:
            self._announced = True
            self._bridge.rendition(self.info)
        self._stats.count_out(len(payload), arrival)
        self._bridge.packet(
            EncodedPacket(
                rendition=self.plan.name,
                pts=pts,
                dts=dts,
                duration=self._slot_ticks(slot + 1) - self._slot_ticks(slot),
                keyframe=packet.is_keyframe,
                payload=payload,
                arrival=arrival,
            )
        )
