"""The decode thread of a stream: every unit decoded once, frames picked for every rung."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction

import av
from av.video.codeccontext import VideoCodecContext

from ingest.codecs import AvcConfig, BitstreamError
from ingest.media import MediaUnit
from transcode.output import VIDEO_TIMESCALE, RenditionInfo, SinkBridge
from transcode.policy import (
    DECODABLE_VIDEO,
    LadderConfig,
    RungPlan,
    VerticalPolicy,
    estimate_frame_rate,
    gop_frames,
    output_frame_rate,
    passthrough_candidate,
    plan_ladder,
    plan_onto,
)
from transcode.stats import TranscodeStats
from transcode.timeline import FrameSlotPicker, RepairedTime, to_ticks
from transcode.video.encoder import PickedFrame, RungEncoder
from transcode.video.passthrough import PassthroughRung

log = logging.getLogger(__name__)

#: Decoded frames gathered before the frame rate is measured and the ladder planned (the
#: first frames wait that long once, at stream start).
_STARTUP_FRAMES = 6
_STARTUP_SPAN = Fraction(1, 4)


#: FFmpeg's native ``av1`` decoder needs a hardware accelerator; dav1d is the software one.
_DECODER_NAMES = {"av1": "libdav1d"}

_VideoItem = tuple[MediaUnit, RepairedTime | None]


class _HandOver:
    """Queued by the event loop once the decoder stopped decoding (see ``SourceDecoder``)."""


#: The thread returns at this item and the loop feeds the decoder itself from the next unit.
HAND_OVER = _HandOver()


class SourceDecoder:
    """The decode thread: units → decoded frames → constant-rate slots → every rung.

    Faults never end the stream: an undecodable unit (broken NALs, missing SPS/PPS) is counted
    and everything up to the next keyframe is skipped; units before any usable configuration
    are counted and dropped. The picked frame sequence repeats the last good frame across such
    holes, so outputs never stall.

    Frames are decoded only while something needs them: planning (size, frame rate), the
    passthrough verdict (a rejected passthrough falls back to encoded rungs) and encoded rungs.
    A final ladder that is the passthrough rung alone stops decoding and frees the decoder:
    the source's packets then go out as they came, damaged ones included (players conceal).
    The owner may then queue ``HAND_OVER``: the thread calls ``on_handed_over`` on the loop and
    returns, and the owner calls :meth:`feed` and :meth:`end_of_stream` on the loop itself,
    saving a thread hop per unit (≈ 20 % of a passthrough publisher's CPU, measured).
    """

    def __init__(
        self,
        config: LadderConfig,
        vertical: Callable[[], VerticalPolicy],
        bridge: SinkBridge,
        stats: TranscodeStats,
        on_ladder: Callable[[list[RenditionInfo]], None],
        prefix: str,
        on_handed_over: Callable[[], None] = lambda: None,
        video_like: Sequence[tuple[str, int, int]] = (),
        on_air: threading.Event | None = None,
    ) -> None:
        self.config = config
        #: A warm standby's: frames are decoded and picked but reach no rung until it is set;
        #: then every rung starts at the next picked frame, an IDR on each (see ``_dispatch``).
        self._on_air = on_air
        #: The slot the IDR grid counts from (a warm standby's first slot on air).
        self._gop_origin = 0
        #: The show's video renditions this source must feed (see ``plan_onto``); () = its own.
        self._video_like = tuple(video_like)
        self._vertical = vertical
        self._bridge = bridge
        self._stats = stats
        self._faults = stats.faults
        self._on_ladder = on_ladder
        self._on_handed_over = on_handed_over
        self._prefix = prefix
        self.input: queue.Queue[_VideoItem | _HandOver | None] = queue.Queue(maxsize=64)
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
        if on_air is not None:
            # A source IDR cannot be had at the takeover frame, so a warm standby encodes every
            # rung, the passthrough rendition's too: each cuts an IDR at that same frame. (Not
            # the slate on the passthrough rendition until the source's IDR: that rendition
            # would switch twice, at other frames than the rest, and its discontinuities would
            # no longer line up with the other renditions' for players switching renditions.)
            self.passthrough.reject()
        self._ladder_sent = False
        self._source_size: tuple[int, int] = (0, 0)
        self._previous: av.VideoFrame | None = None
        self._idr_owed = False
        #: False once the ladder is final with no encoded rung: nothing needs a decoded frame.
        self.decoding = True
        self._thread = threading.Thread(target=self._run, name="transcode-decode", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    # --- thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self.input.get()) is not None:
            if isinstance(item, _HandOver):
                log.info("%s passthrough only: the event loop passes the source on", self._prefix)
                self._bridge.call(self._on_handed_over)
                return
            self.feed(*item)
        self.end_of_stream()

    def feed(self, unit: MediaUnit, at: RepairedTime | None) -> None:
        """One unit, on the thread (or on the loop once handed over)."""
        try:
            if unit.is_config:
                self._on_config(unit)
            elif at is not None:
                self._on_unit(unit, at)
        except Exception as exc:  # a bug must not leave the rungs waiting forever
            log.exception("%s video unit failed", self._prefix)
            self._faults.record("internal_error", repr(exc))

    def _on_config(self, unit: MediaUnit) -> None:
        if unit.codec not in DECODABLE_VIDEO:
            self._faults.record("unsupported_codec", f"video codec {unit.codec!r}")
            self._unusable_config()
            return
        if unit.payload == self._extradata and unit.codec == self.codec:
            return
        if unit.codec == "h264":
            try:
                AvcConfig.parse(unit.payload)
            except BitstreamError as exc:
                self._faults.record("bad_config", str(exc))
                self._unusable_config()
                return
            self.passthrough.configure(unit.payload)
        else:
            self.passthrough.reject()
        self._drain_decoder()
        self.codec = unit.codec
        self._extradata = unit.payload
        if not self.decoding:
            return
        decoder = av.CodecContext.create(_DECODER_NAMES.get(unit.codec, unit.codec), "r")
        assert isinstance(decoder, VideoCodecContext)
        decoder.extradata = unit.payload
        # Slice threads add no delay; frame threads would add a frame of latency per thread.
        decoder.thread_type = "SLICE"
        decoder.thread_count = 2
        self.decoder = decoder
        self._awaiting_keyframe = True

    def _unusable_config(self) -> None:
        """Units wait for the next usable configuration (also when no longer decoding)."""
        self._drain_decoder()
        self.decoder = None
        self.codec = ""

    def _on_unit(self, unit: MediaUnit, at: RepairedTime) -> None:
        if not self.decoding:
            if self.codec == "h264":
                self.passthrough.offer(unit, at)
            return
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
        plans = self._plans(width, height, self.passthrough.gop_ok)
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

    def _plans(self, width: int, height: int, gop_ok: bool | None) -> list[RungPlan]:
        assert self.fps is not None
        if self._video_like:
            return plan_onto(width, height, self.codec, gop_ok, self.config, self._video_like)
        return plan_ladder(width, height, self.fps, self.codec, gop_ok, self.config)

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
        self._link_cascade()

    def _link_cascade(self) -> None:
        """Waiting rungs scale from the largest waiting rung of their aspect, when smaller.

        Only among rungs that start together: a child must get its parent's every frame from
        its own first one, so rungs already running keep scaling from the source.
        """
        if not self.config.cascade_scaling:
            return
        by_size = sorted(self._waiting_rungs, key=lambda r: r.plan.width, reverse=True)
        for index, rung in enumerate(by_size):
            if rung.parent is not None:  # linked when it was planned
                continue
            parent = next(
                (
                    p
                    for p in by_size[:index]
                    if p.parent is None
                    and p.plan.width * rung.plan.height == p.plan.height * rung.plan.width
                    and p.plan.width > rung.plan.width
                ),
                None,
            )
            if parent is not None:
                parent.add_child(rung)

    def _check_passthrough(self) -> None:
        """Re-plan when the passthrough check fails; announce the ladder once it is final."""
        if self._ladder_sent or not self.passthrough.resolved or self.picker is None:
            return
        if self.passthrough.state == "rejected" and self.fps is not None:
            width, height = self._source_size
            self._start_rungs(self._plans(width, height, False))
        self._ladder_sent = True
        infos = [r.info for r in self.rungs.values()]
        if self.passthrough.info is not None:
            infos.insert(0, self.passthrough.info)
        infos.sort(key=lambda info: info.width, reverse=True)
        self._bridge.call(self._on_ladder, infos)
        if not self.rungs and self.passthrough.state == "active":
            # Measured: decoding was ~2/3 of a passthrough-only origin's CPU, for no reader.
            self.decoding = False
            self.decoder = None  # its slice threads and frame pool go with it
            self._previous = None
            self._arrivals.clear()

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
        # Rungs beside a passthrough rung (live or still being checked) keep the source's times.
        source_timed = self.passthrough.state in ("pending", "active")
        self._dispatch(frame, placement.slot, arrival, idr, frame.pts if source_timed else None)
        self._previous = frame

    def _is_idr(self, slot: int, source_keyframe: bool) -> bool:
        if self.passthrough.state == "active":
            # Cut where the passthrough rung cuts, so all renditions switch at the same PTS.
            return source_keyframe
        return (slot - self._gop_origin) % self.gop == 0

    def _dispatch(
        self,
        frame: av.VideoFrame,
        slot: int,
        arrival: float,
        idr: bool,
        source_ticks: int | None = None,
    ) -> None:
        if self._on_air is not None and not self._active_rungs:
            if not self._on_air.is_set():
                return  # warm: only the newest frame is kept (``_previous``)
            # On air from this frame: every rung starts here with an IDR, and the GOP grid
            # counts from it (the next IDR one GOP later, as after a cold start).
            self._gop_origin = slot
            idr = True
        if self._waiting_rungs and (idr or not self._active_rungs):
            # A rung starts on an IDR slot so its first GOP lines up with the others.
            self._active_rungs += self._waiting_rungs
            self._waiting_rungs = []
            idr = True
        item = PickedFrame(frame, slot, arrival, idr, source_ticks)
        for rung in self._active_rungs:
            if rung.parent is None:  # the others get their parent's picture
                rung.submit(item)

    def end_of_stream(self) -> None:
        """Flush everything (on the thread, or on the loop once handed over)."""
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
                if rung.parent is None:  # a parent ends its children after its last frame
                    rung.finish()
            for rung in self.rungs.values():
                rung.join()
