"""The source's own H.264 packets as the top rung, when they fit the ladder."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from ingest.codecs import AvcConfig, BitstreamError
from ingest.media import MediaKind, MediaUnit
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, RenditionInfo, SinkBridge
from transcode.policy import LadderConfig, RungPlan
from transcode.stats import RenditionStats, TranscodeStats
from transcode.timeline import RepairedTime

#: A keyframe this much later than one segment still counts as "one segment apart".
_GOP_TOLERANCE = Fraction(1, 20)


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
        self._counter: RenditionStats | None = None  # the rendition's, once it emits
        self._faults = stats.faults
        self._prefix = prefix
        self._info: RenditionInfo | None = None
        self._held: list[tuple[MediaUnit, RepairedTime]] = []
        #: The packet held back for its duration: the unit, its PTS and DTS in ticks.
        self._last: tuple[MediaUnit, int, int] | None = None
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
        dts = at.dts_ticks()
        last = self._last
        if last is not None:
            self._emit(last[0], last[1], last[2], dts - last[2])
        self._last = (unit, at.pts_ticks(), dts)

    def _flush_last(self) -> None:
        if self._last is not None:
            unit, pts, dts = self._last
            self._emit(unit, pts, dts, self._last_duration)
            self._last = None

    def _emit(self, unit: MediaUnit, pts: int, dts: int, duration: int) -> None:
        assert self._info is not None
        counter = self._counter
        if counter is None:  # held from the first packet on: no lookup per packet
            counter = self._counter = self._stats.rendition(self._info.name)
        if counter.count_out(len(unit.payload), unit.arrival):
            self._bridge.rendition(self._info)
        self._last_duration = duration or self._last_duration
        # Positional (rendition, pts, dts, duration, keyframe, payload, arrival): keywords
        # cost a third of the packet's making, one per unit.
        packet = EncodedPacket(
            self._info.name, pts, dts, duration, unit.keyframe, unit.payload, unit.arrival
        )
        self._bridge.packet(packet)
