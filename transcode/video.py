"""Video: one decode thread per stream, one scale+encode thread per rung, passthrough rung.

``SourceDecoder`` (thread) decodes every unit once, picks constant-rate output slots, decides
which slots are IDRs (the same for every rung) and hands each picked frame to every
``RungEncoder`` (thread) through a small bounded queue, so a slow rung holds the decoder back
instead of piling up frames. PyAV releases the GIL inside FFmpeg, so the threads run in parallel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import av
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from ingest.codecs import AvcConfig, BitstreamError, annexb_to_avcc
from ingest.media import MediaKind, MediaUnit
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, RenditionInfo, SinkBridge
from transcode.policy import (
    DECODABLE_VIDEO,
    LadderConfig,
    RungPlan,
    VerticalMode,
    VerticalPolicy,
    crop_rect,
    estimate_frame_rate,
    fit_rect,
    gop_frames,
    output_frame_rate,
    passthrough_candidate,
    plan_ladder,
)
from transcode.stats import TranscodeStats
from transcode.timeline import FrameSlotPicker, RepairedTime, round_half_up

log = logging.getLogger(__name__)

#: Decoded frames gathered before the frame rate is measured and the ladder planned (the
#: first frames wait that long once, at stream start).
_STARTUP_FRAMES = 6
_STARTUP_SPAN = Fraction(1, 4)
#: Frames in flight per rung: enough to keep the encoder busy, little added latency.
_RUNG_QUEUE = 4
#: A keyframe this much later than one segment still counts as "one segment apart".
_GOP_TOLERANCE = Fraction(1, 20)


def to_ticks(seconds: Fraction, timescale: int = VIDEO_TIMESCALE) -> int:
    return round_half_up(seconds * timescale)


@dataclass(frozen=True, slots=True)
class PickedFrame:
    """A decoded frame placed in output slot ``slot``; ``idr`` is decided once for all rungs."""

    frame: av.VideoFrame
    slot: int
    arrival: float
    idr: bool


class FrameShaper:
    """Vertical crop (or pad) and scale to one rung's size, through a lavfi graph.

    Why a graph and not ``frame.reformat`` or numpy: ``crop`` in lavfi only moves the plane
    pointers (no copy), while a numpy slice must be copied back into a frame (measured 1080p
    crop+scale: 0.65 ms lavfi vs 1.08 ms numpy+VideoReformatter); the ``scale`` filter is the
    same swscale a ``VideoReformatter`` runs, at the same speed with one thread (1.38 vs
    1.32 ms, 1080×1920 → 720×1280), and ``pad`` letterboxes without another pass. The graph
    is this rung's one scaler; it is rebuilt only when the source geometry, pixel format or the
    vertical policy (crop focus) changes, never per frame.
    """

    def __init__(self, width: int, height: int, scale_flags: str) -> None:
        self.width = width
        self.height = height
        self.scale_flags = scale_flags
        self.rebuilds = 0
        self._key: tuple[int, int, str, VerticalPolicy] | None = None
        self._graph: av.filter.Graph | None = None

    def filters(self, width: int, height: int, vertical: VerticalPolicy) -> list[tuple[str, str]]:
        """The filter chain for a ``width×height`` source (exposed for tests and the benchmark)."""
        scale = f"flags={self.scale_flags}"
        if vertical.mode is VerticalMode.PAD:
            inner = fit_rect(width, height, self.width, self.height)
            return [
                ("scale", f"{inner.width}:{inner.height}:{scale}"),
                ("pad", f"{self.width}:{self.height}:{inner.x}:{inner.y}:black"),
                ("format", "yuv420p"),
                ("setsar", "1"),
            ]
        rect = crop_rect(width, height, vertical.focus)
        chain: list[tuple[str, str]] = []
        if (rect.width, rect.height) != (width, height):
            chain.append(("crop", f"{rect.width}:{rect.height}:{rect.x}:{rect.y}:exact=1"))
        chain += [
            ("scale", f"{self.width}:{self.height}:{scale}"),
            ("format", "yuv420p"),
            ("setsar", "1"),
        ]
        return chain

    def shape(self, frame: av.VideoFrame, vertical: VerticalPolicy) -> av.VideoFrame:
        key = (frame.width, frame.height, frame.format.name, vertical)
        if key != self._key or self._graph is None:
            self._graph = self._build(frame, vertical)
            self._key = key
            self.rebuilds += 1
        self._graph.push(frame)
        out = self._graph.pull()
        assert isinstance(out, av.VideoFrame)
        return out

    def _build(self, frame: av.VideoFrame, vertical: VerticalPolicy) -> av.filter.Graph:
        graph = av.filter.Graph()
        graph.threads = 1  # rungs already run in parallel; more threads only contend
        node = graph.add_buffer(
            width=frame.width,
            height=frame.height,
            format=frame.format,
            time_base=Fraction(1, VIDEO_TIMESCALE),
        )
        for name, args in self.filters(frame.width, frame.height, vertical):
            nxt = graph.add(name, args)
            node.link_to(nxt)
            node = nxt
        sink = graph.add("buffersink")
        node.link_to(sink)
        graph.configure()
        return graph


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
    """One rung's worker thread: shape each picked frame, encode it, emit AVCC packets."""

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
        self._announced = False
        self._arrivals: dict[int, float] = {}
        self._queue: queue.Queue[PickedFrame | None] = queue.Queue(maxsize=_RUNG_QUEUE)
        self._thread = threading.Thread(
            target=self._run, name=f"transcode-{plan.name}", daemon=True
        )
        self._thread.start()

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
        self._arrivals[item.slot] = item.arrival
        self._stats.frames_in += 1
        for packet in self._encoder.encode(frame):
            self._emit(packet)

    def _emit(self, packet: av.Packet[Any]) -> None:
        if packet.pts is None:
            return
        slot = packet.pts
        dts = packet.dts if packet.dts is not None else slot
        arrival = self._arrivals.pop(slot, time.time())
        payload = annexb_to_avcc(bytes(packet))
        if not self._announced:
            self._announced = True
            self._bridge.rendition(self.info)
        self._stats.count_out(len(payload), arrival)
        self._bridge.packet(
            EncodedPacket(
                rendition=self.plan.name,
                pts=self._slot_ticks(slot),
                dts=self._slot_ticks(dts),
                duration=self._slot_ticks(slot + 1) - self._slot_ticks(slot),
                keyframe=packet.is_keyframe,
                payload=payload,
                arrival=arrival,
            )
        )


PassthroughState = Literal["pending", "active", "rejected", "stopped"]


class PassthroughRung:
    """The source's own H.264 packets as the top rung, re-timestamped only.

    Offered when the source is H.264, 9:16 and its keyframes are at most one segment apart.
    Packets are held until both the geometry (from the first decoded frame) and the GOP (the
    second keyframe) are known; then they are released or dropped. It stops for good when the
    source's codec configuration changes (the init segment would no longer match).
    """

    def __init__(
        self, config: LadderConfig, bridge: SinkBridge, stats: TranscodeStats, prefix: str
    ) -> None:
        self.state: PassthroughState = "pending"
        self.gop_ok: bool | None = None
        self.plan: RungPlan | None = None
        self.avcc: AvcConfig | None = None
        self._segment = Fraction(config.segment_duration).limit_denominator(1000)
        self._enabled = config.passthrough
        self._bridge = bridge
        self._stats = stats
        self._faults = stats.faults
        self._prefix = prefix
        self._info: RenditionInfo | None = None
        self._held: list[tuple[MediaUnit, RepairedTime]] = []
        self._last: tuple[MediaUnit, RepairedTime] | None = None
        self._last_key: Fraction | None = None
        self._last_duration = 0

    @property
    def resolved(self) -> bool:
        return self.state != "pending"

    @property
    def info(self) -> RenditionInfo | None:
        return self._info if self.state in ("active", "stopped") else None

    def configure(self, record: bytes) -> None:
        """A source configuration: the first one is kept; any later different one stops us."""
        if not self._enabled:
            self.state = "rejected"
            return
        if self.avcc is None and self.state == "pending":
            try:
                self.avcc = AvcConfig.parse(record)
            except BitstreamError:
                self.state = "rejected"
                return
            if self.avcc.length_size != 4:
                self.state = "rejected"
            return
        if self.avcc is not None and self.avcc.to_bytes() != AvcConfig.parse(record).to_bytes():
            self._stop("source codec configuration changed")

    def offer(self, unit: MediaUnit, at: RepairedTime) -> None:
        """Every decodable source access unit, in decode order."""
        if self.state in ("rejected", "stopped"):
            return
        if unit.keyframe:
            if self._last_key is not None:
                spacing = at.pts - self._last_key
                if spacing > self._segment + _GOP_TOLERANCE:
                    if self.state == "pending":
                        self._decide_gop(False)
                        return
                    self._faults.record(
                        "passthrough_long_gop", f"source keyframes {float(spacing):.2f} s apart"
                    )
                elif self.gop_ok is None:
                    self._decide_gop(True)
            self._last_key = at.pts
        elif (
            self.state == "pending"
            and self._last_key is not None
            and at.pts - self._last_key > self._segment + _GOP_TOLERANCE
        ):
            self._decide_gop(False)
            return
        if self.state == "pending":
            self._held.append((unit, at))
        elif self.state == "active":
            self._push(unit, at)

    def set_geometry(self, plan: RungPlan | None, fps: Fraction) -> None:
        """The planner's verdict: the passthrough rung's plan, or ``None`` (does not fit)."""
        if self.state != "pending":
            return
        if plan is None or self.avcc is None:
            self._reject()
            return
        self.plan = plan
        self._info = RenditionInfo(
            name=plan.name,
            kind=MediaKind.VIDEO,
            codec="h264",
            codec_string=self.avcc.codec_string,
            timescale=VIDEO_TIMESCALE,
            extradata=self.avcc.to_bytes(),
            bitrate=0,
            width=plan.width,
            height=plan.height,
            fps=fps,
            passthrough=True,
        )
        self._maybe_activate()

    def end_of_stream(self) -> None:
        """A stream shorter than one GOP: accept if the geometry fits; then flush."""
        if self.state == "pending" and self.gop_ok is None:
            self._decide_gop(True)
        if self.state == "pending":
            self._reject()
        self._flush_last()

    def _decide_gop(self, ok: bool) -> None:
        self.gop_ok = ok
        if not ok:
            self._reject()
        else:
            self._maybe_activate()

    def _maybe_activate(self) -> None:
        if self.gop_ok and self.plan is not None and self.state == "pending":
            self.state = "active"
            held, self._held = self._held, []
            for unit, at in held:
                self._push(unit, at)

    def reject(self) -> None:
        """Not a passthrough candidate after all (e.g. the source is not H.264)."""
        if self.state == "pending":
            self._reject()

    def _reject(self) -> None:
        self.state = "rejected"
        self._held.clear()

    def _stop(self, why: str) -> None:
        if self.state == "active":
            self._flush_last()
            self._faults.record("passthrough_stopped", why)
            self.state = "stopped"
        elif self.state == "pending":
            self._reject()

    def _push(self, unit: MediaUnit, at: RepairedTime) -> None:
        # Hold one packet: its duration is the DTS distance to the next one.
        if self._last is not None:
            self._emit(*self._last, duration=to_ticks(at.dts) - to_ticks(self._last[1].dts))
        self._last = (unit, at)

    def _flush_last(self) -> None:
        if self._last is not None:
            self._emit(*self._last, duration=self._last_duration)
            self._last = None

    def _emit(self, unit: MediaUnit, at: RepairedTime, duration: int) -> None:
        assert self._info is not None
        if self._stats.rendition(self._info.name).count_out(len(unit.payload), unit.arrival):
            self._bridge.rendition(self._info)
        self._last_duration = duration or self._last_duration
        self._bridge.packet(
            EncodedPacket(
                rendition=self._info.name,
                pts=to_ticks(at.pts),
                dts=to_ticks(at.dts),
                duration=duration,
                keyframe=unit.keyframe,
                payload=unit.payload,
                arrival=unit.arrival,
            )
        )


_VideoItem = tuple[MediaUnit, RepairedTime | None]


class SourceDecoder:
    """The decode thread: units → decoded frames → constant-rate slots → every rung.

    Faults never end the stream: an undecodable unit (broken NALs, missing SPS/PPS) is counted
    and everything up to the next keyframe is skipped; units before any usable configuration
    are counted and dropped. The picked frame sequence repeats the last good frame across such
    holes, so outputs never stall.
    """

    def __init__(
        self,
        config: LadderConfig,
        vertical: Callable[[], VerticalPolicy],
        bridge: SinkBridge,
        stats: TranscodeStats,
        on_ladder: Callable[[list[RenditionInfo]], None],
        prefix: str,
    ) -> None:
        self.config = config
        self._vertical = vertical
        self._bridge = bridge
        self._stats = stats
        self._faults = stats.faults
        self._on_ladder = on_ladder
        self._prefix = prefix
        self.input: queue.Queue[_VideoItem | None] = queue.Queue(maxsize=64)
        self.decoder: VideoCodecContext | None = None
        self.codec = ""
        self._extradata = b""
        self._awaiting_keyframe = True
        self._arrivals: dict[int, float] = {}
        self._startup: list[tuple[av.VideoFrame, Fraction, float]] = []
        self.source_fps: Fraction | None = None
        self.fps: Fraction | None = None
        self.gop = 0
        self.picker: FrameSlotPicker | None = None
        self.rungs: dict[str, RungEncoder] = {}
        self._waiting_rungs: list[RungEncoder] = []
        self._active_rungs: list[RungEncoder] = []
        self.passthrough = PassthroughRung(config, bridge, stats, prefix)
        self._ladder_sent = False
        self._source_size: tuple[int, int] = (0, 0)
        self._previous: av.VideoFrame | None = None
        self._idr_owed = False
        self._thread = threading.Thread(target=self._run, name="transcode-decode", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    # --- thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self.input.get()) is not None:
            unit, at = item
            try:
                if unit.is_config:
                    self._on_config(unit)
                elif at is not None:
                    self._on_unit(unit, at)
            except Exception as exc:  # a bug must not leave the rungs waiting forever
                log.exception("%s video unit failed", self._prefix)
                self._faults.record("internal_error", repr(exc))
        self._end_of_stream()

    def _on_config(self, unit: MediaUnit) -> None:
        if unit.codec not in DECODABLE_VIDEO:
            self._faults.record("unsupported_codec", f"video codec {unit.codec!r}")
            self._drain_decoder()
            self.decoder = None
            return
        if unit.payload == self._extradata and unit.codec == self.codec:
            return
        if unit.codec == "h264":
            try:
                AvcConfig.parse(unit.payload)
            except BitstreamError as exc:
                self._faults.record("bad_config", str(exc))
                self._drain_decoder()
                self.decoder = None
                return
            self.passthrough.configure(unit.payload)
        else:
            self.passthrough.reject()
        self._drain_decoder()
        decoder = av.CodecContext.create(unit.codec, "r")
        assert isinstance(decoder, VideoCodecContext)
        decoder.extradata = unit.payload
        # Slice threads add no delay; frame threads would add a frame of latency per thread.
        decoder.thread_type = "SLICE"
        decoder.thread_count = 2
        self.decoder = decoder
        self.codec = unit.codec
        self._extradata = unit.payload
        self._awaiting_keyframe = True

    def _on_unit(self, unit: MediaUnit, at: RepairedTime) -> None:
        if self.decoder is None:
            self._faults.record("missing_config", "video before a usable codec configuration")
            return
        if self._awaiting_keyframe:
            if not unit.keyframe:
                self._stats.frames_dropped += 1
                return
            self._awaiting_keyframe = False
        if self.codec == "h264":
            self.passthrough.offer(unit, at)
        packet = av.Packet(unit.payload)
        packet.pts = to_ticks(at.pts)
        packet.dts = to_ticks(at.dts)
        packet.time_base = Fraction(1, VIDEO_TIMESCALE)
        self._arrivals[packet.pts] = unit.arrival
        if len(self._arrivals) > 512:  # entries of frames the decoder never returned
            del self._arrivals[next(iter(self._arrivals))]
        try:
            frames = self.decoder.decode(packet)
        except av.error.FFmpegError as exc:
            self._faults.record("corrupt_video", f"{exc}; skipping to the next keyframe")
            self._awaiting_keyframe = True
            return
        for frame in frames:
            self._on_frame(frame, unit.arrival)

    def _drain_decoder(self) -> None:
        if self.decoder is None:
            return
        try:
            frames = self.decoder.decode(None)
        except av.error.FFmpegError:
            return
        for frame in frames:
            self._on_frame(frame, time.time())

    def _on_frame(self, frame: av.VideoFrame, fallback_arrival: float) -> None:
        if frame.pts is None or frame.is_corrupt:
            self._faults.record("corrupt_video", "decoder returned a damaged frame")
            self._awaiting_keyframe = True
            return
        self._stats.frames_decoded += 1
        arrival = self._arrivals.pop(frame.pts, fallback_arrival)
        at = Fraction(frame.pts, VIDEO_TIMESCALE)
        if self.picker is None:
            self._startup.append((frame, at, arrival))
            times = [t for _, t, _ in self._startup]
            if len(self._startup) >= _STARTUP_FRAMES or max(times) - min(times) >= _STARTUP_SPAN:
                self._plan()
            return
        self._pick(frame, at, arrival)

    # --- planning ------------------------------------------------------------------------

    def _plan(self) -> None:
        first = self._startup[0][0]
        width, height = first.width, first.height
        self._source_size = (width, height)
        times = [t for _, t, _ in self._startup]
        self.source_fps = estimate_frame_rate(times) or Fraction(30)
        self.fps = output_frame_rate(self.source_fps, self.config.max_fps)
        self.gop = gop_frames(self.config.segment_duration, self.fps)
        self.picker = FrameSlotPicker(self.fps)
        plans = plan_ladder(
            width, height, self.fps, self.codec, self.passthrough.gop_ok, self.config
        )
        passthrough = next((p for p in plans if p.passthrough), None)
        log.info(
            "%s source %s %dx%d %.3g fps → %s at %.3g fps, GOP %d",
            self._prefix,
            self.codec,
            width,
            height,
            float(self.source_fps),
            ", ".join(p.name + (" (passthrough)" if p.passthrough else "") for p in plans),
            float(self.fps),
            self.gop,
        )
        self._start_rungs([p for p in plans if not p.passthrough])
        if not passthrough_candidate(width, height, self.codec, self.config):
            self.passthrough.set_geometry(None, self.source_fps)
        else:
            self.passthrough.set_geometry(passthrough, self.source_fps)
        startup, self._startup = self._startup, []
        for frame, at, arrival in startup:
            self._pick(frame, at, arrival)

    def _start_rungs(self, plans: list[RungPlan]) -> None:
        assert self.fps is not None
        for plan in plans:
            if plan.name in self.rungs:
                continue
            rung = RungEncoder(
                plan,
                self.fps,
                self.gop,
                self.config,
                self._vertical,
                self._bridge,
                self._stats,
                self._prefix,
            )
            self.rungs[plan.name] = rung
            self._waiting_rungs.append(rung)

    def _check_passthrough(self) -> None:
        """Re-plan when the passthrough check fails; announce the ladder once it is final."""
        if self._ladder_sent or not self.passthrough.resolved or self.picker is None:
            return
        if self.passthrough.state == "rejected" and self.fps is not None:
            width, height = self._source_size
            self._start_rungs(plan_ladder(width, height, self.fps, self.codec, False, self.config))
        self._ladder_sent = True
        infos = [r.info for r in self.rungs.values()]
        if self.passthrough.info is not None:
            infos.insert(0, self.passthrough.info)
        infos.sort(key=lambda info: info.width, reverse=True)
        self._bridge.call(self._on_ladder, infos)

    # --- picking -------------------------------------------------------------------------

    def _pick(self, frame: av.VideoFrame, at: Fraction, arrival: float) -> None:
        assert self.picker is not None
        self._check_passthrough()
        placement = self.picker.place(at)
        follow_source = self.passthrough.state == "active"
        if placement is None:
            self._stats.frames_dropped += 1
            if follow_source and frame.key_frame:
                self._idr_owed = True  # the source IDR's slot was taken: cut at the next one
            return
        if self._previous is not None:
            for slot in placement.repeats:
                self._dispatch(self._previous, slot, arrival, self._is_idr(slot, False))
        self._stats.slots_repeated += len(placement.repeats)
        idr = self._is_idr(placement.slot, frame.key_frame or self._idr_owed)
        self._idr_owed = False
        self._dispatch(frame, placement.slot, arrival, idr)
        self._previous = frame

    def _is_idr(self, slot: int, source_keyframe: bool) -> bool:
        if self.passthrough.state == "active":
            # Cut where the passthrough rung cuts, so all renditions switch at the same PTS.
            return source_keyframe
        return slot % self.gop == 0

    def _dispatch(self, frame: av.VideoFrame, slot: int, arrival: float, idr: bool) -> None:
        if self._waiting_rungs and (idr or not self._active_rungs):
            # A rung starts on an IDR slot so its first GOP lines up with the others.
            self._active_rungs += self._waiting_rungs
            self._waiting_rungs = []
            idr = True
        item = PickedFrame(frame, slot, arrival, idr)
        for rung in self._active_rungs:
            rung.submit(item)

    def _end_of_stream(self) -> None:
        try:
            self._drain_decoder()
            if self.picker is None and self._startup:
                self._plan()
            self.passthrough.end_of_stream()
            self._check_passthrough()
        except Exception as exc:  # still flush the rungs below
            log.exception("%s video end of stream failed", self._prefix)
            self._faults.record("internal_error", repr(exc))
        finally:
            if not self._ladder_sent:
                self._ladder_sent = True
                self._bridge.call(self._on_ladder, [r.info for r in self.rungs.values()])
            for rung in self.rungs.values():
                rung.finish()
            for rung in self.rungs.values():
                rung.join()
