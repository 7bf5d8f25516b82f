"""Live packaging of one stream: transcoder output in, playlists and parts held for the origin.

Only the live window is kept in memory. Waiting HTTP requests wake on the part they wait for
(an ``asyncio.Condition`` notified per published part): no polling.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from ingest.media import MediaKind
from packager.fmp4 import Emsg, TrackInfo, init_segment
from packager.playlist import (
    DateRangeLine,
    MediaPlaylistState,
    Part,
    RenditionReport,
    Segment,
    Variant,
    part_uri,
    render_media_playlist,
    render_multivariant_playlist,
    segment_uri,
)
from packager.segmenter import AUDIO_TRACK_ID, VIDEO_TRACK_ID, CutPart, PartCutter, TrackTiming
from packager.tags import Tag, TagTimeline
from transcode.output import EncodedPacket, RenditionInfo

log = logging.getLogger(__name__)

#: Timestamps on the packaged timeline start here, so B-frame and AAC-priming decode times
#: that the encoders put slightly before zero stay positive in ``tfdt``.
TIMELINE_START = Fraction(10)


_MAX_BACKLOG = 20_000


@dataclass(frozen=True)
class PackagerConfig:
    #: 1/3 s rounded up to the millisecond: sources with millisecond timestamps (33/34 ms
    #: frames) then still fit ten frames per part, like the re-encoded rungs, so part
    #: boundaries line up on every rendition.
    part_target: Fraction = Fraction(334, 1000)
    segment_duration: Fraction = Fraction(2)
    window_segments: int = 10  # A: ≥ 6 segments; S 6.2.5.1 needs > CAN-SKIP-UNTIL to skip
    reconnect_window: float = 10.0

    @property
    def target_duration(self) -> int:
        # S 4.4.3.1: EXTINF rounded must not exceed it; segments are cut at the target.
        return max(1, round(self.segment_duration))


class PackageListener(Protocol):
    """Told about packaging events (for metrics); the packager knows nothing of who listens."""

    def packet(self, stream: str, rendition: str, lag_seconds: float) -> None:
        """A packet left the encoder ``lag_seconds`` after ingest received its source frame."""

    def part(
        self, stream: str, rendition: str, lateness_seconds: float, ends_segment: bool
    ) -> None:
        """A part was listed ``lateness_seconds`` after ingest received its last frame."""


class RenditionOutput:
    """One rendition's live playlist, its parts and segments, and the requests waiting on them."""

    def __init__(self, package: LivePackage, info: RenditionInfo, audio: RenditionInfo | None):
        self.package = package
        self.info = info
        self.name = info.name
        cfg = package.config
        self.state = MediaPlaylistState(cfg.target_duration, cfg.part_target)
        lead_id = VIDEO_TRACK_ID if info.kind is MediaKind.VIDEO else AUDIO_TRACK_ID
        self.lead = TrackTiming(lead_id, info.timescale)
        self.audio = audio
        self.cutter = PartCutter(
            self.lead,
            TrackTiming(AUDIO_TRACK_ID, audio.timescale) if audio is not None else None,
            cfg.part_target,
            cfg.segment_duration,
        )
        self.cutter.set_offset(package.timeline_offset)
        tracks = [_track(info, lead_id)]
        if audio is not None:
            tracks.append(_track(audio, AUDIO_TRACK_ID))
        self.codecs = ",".join(
            [info.codec_string] + ([audio.codec_string] if audio is not None else [])
        )
        self.files: dict[str, bytes] = {"init.mp4": init_segment(tracks)}
        self._changed = asyncio.Event()
        self._cache: dict[tuple[str | None, int], str] = {}
        self._cache_version = -1
        self._segment_parts: list[bytes] = []
        self._bytes_in_segments: list[tuple[int, Fraction]] = []  # (bytes, seconds) per segment
        self._pending_discontinuity = False
        self.frame_latency: collections.deque[float] = collections.deque(maxlen=4096)

    # -- input -------------------------------------------------------------------------
    def push(self, packet: EncodedPacket) -> None:
        part = self.cutter.push_lead(packet)
        if part is not None:
            self._publish(part)

    def flush(self) -> None:
        part = self.cutter.flush()
        if part is not None:
            self._publish(part)

    def mark_discontinuity(self) -> None:
        self._pending_discontinuity = True

    def _publish(self, cut: CutPart) -> None:
        st = self.state
        ts = self.info.timescale
        start = Fraction(cut.start, ts)
        if cut.starts_segment or not st.segments or st.segments[-1].complete:
            msn = st.segments[-1].msn + 1 if st.segments else self.package.first_msn
            st.segments.append(
                Segment(
                    msn=msn,
                    start=start,
                    program_date_time=self.package.program_date_time(self.package.on_grid(start)),
                    uri=segment_uri(msn),
                    discontinuity=self._pending_discontinuity,
                )
            )
            if self._pending_discontinuity:
                self._pending_discontinuity = False
            self._segment_parts = []
        seg = st.segments[-1]
        idx = len(seg.parts)
        uri = part_uri(seg.msn, idx)
        self.files[uri] = cut.data
        self._segment_parts.append(cut.data)
        seg.parts.append(Part(idx, Fraction(cut.duration, ts), cut.independent, uri))
        if cut.ends_segment:
            seg.complete = True
            data = b"".join(self._segment_parts)  # a segment is exactly its parts' bytes
            self.files[seg.uri] = data
            self._bytes_in_segments.append((len(data), seg.duration))
            del self._bytes_in_segments[: -self.package.config.window_segments]
            self._prune()
            if st.segments:
                self.package.tags.prune(
                    st.segments[0].program_date_time,
                    self.package.clock(),
                    float(st.can_skip_until),
                )
        now = self.package.clock()
        # Server-added latency per frame: ingest arrival → its part listed in the playlist.
        self.frame_latency.extend(now - a for a in cut.arrivals)
        listener = self.package.listener
        if listener is not None and cut.arrivals:
            listener.part(
                self.package.stream_id, self.name, now - cut.arrivals[-1], cut.ends_segment
            )
        self._notify()

    def _prune(self) -> None:
        st = self.state
        excess = len([s for s in st.segments if s.complete]) - self.package.config.window_segments
        for seg in st.segments[: max(excess, 0)]:
            self.files.pop(seg.uri, None)
            for p in seg.parts:
                self.files.pop(p.uri, None)
            if seg.discontinuity:
                st.discontinuity_sequence += 1
        if excess > 0:
            del st.segments[:excess]
        # S 6.2.2: parts leave the playlist after 3 target durations; keep their files
        # servable for 3 more, then drop them (the segment carries the same bytes).
        horizon = Fraction(6 * st.target_duration)
        age = Fraction(0)
        for seg in reversed(st.segments):
            if age > horizon:
                for p in seg.parts:
                    self.files.pop(p.uri, None)
            age += seg.duration

    def end(self) -> None:
        self.state.ended = True
        self._notify()

    def _notify(self) -> None:
        # Everyone waiting holds the old event; swapping first means a waiter that re-checks
        # and waits again sleeps on the new one.
        self.package.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Sleep until ``ready()`` holds after a publish, at most ``timeout`` s; no polling."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return ready()
        return True

    # -- queries -----------------------------------------------------------------------
    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist already satisfies ``_HLS_msn``/``_HLS_part`` (S 6.2.5.2)."""
        st = self.state
        if st.ended:
            return True
        for seg in reversed(st.segments):
            if seg.msn > msn and (seg.complete or seg.parts):
                return True
            if seg.msn == msn:
                if part is None:
                    return seg.complete
                # A part index past the segment's last part means part 0 of the next one.
                return part < len(seg.parts)
        return False

    def report(self) -> RenditionReport | None:
        pos = self.state.last_position
        if pos is None:
            return None
        return RenditionReport(f"../{self.name}/index.m3u8", pos[0], pos[1])

    def playlist(self, skip: str | None = None) -> str:
        """The media playlist; ``skip`` is the ``_HLS_skip`` directive ("YES", "v2") if any.

        Rendered once per change of the stream (every viewer's reload asks for the same text);
        a v2 delta also depends on which date ranges have settled, so it is re-rendered at most
        once a second besides.
        """
        package = self.package
        if self._cache_version != package.version:
            self._cache.clear()
            self._cache_version = package.version
        key = (skip, int(package.clock()) if skip == "v2" else 0)
        text = self._cache.get(key)
        if text is None:
            text = self._cache[key] = self._render(skip)
        return text

    def _render(self, skip: str | None) -> str:
        reports = [
            r
            for other in self.package.renditions.values()
            if other is not self and (r := other.report()) is not None
        ]
        package = self.package
        return render_media_playlist(
            self.state,
            reports,
            skip=skip,
            dateranges=package.dateranges(),
            recently_removed=[i for i, _ in package.tags.removed],
        )

    def hinted(self, name: str) -> bool:
        """Whether ``name`` is the part the PRELOAD-HINT points at (or the one after it)."""
        msn, idx = self.state.next_part
        return name in (part_uri(msn, idx), part_uri(msn + 1, 0)) and not self.state.ended

    def variant(self) -> Variant:
        measured = [b * 8 / float(d) for b, d in self._bytes_in_segments if d > 0]
        nominal = self.info.bitrate + (self.audio.bitrate if self.audio else 0)
        peak = max(measured, default=0.0)
        average = sum(measured) / len(measured) if measured else 0.0
        # Before anything is measured, the configured rate plus 10 % container overhead.
        bandwidth = int(max(peak, nominal * 1.1))
        return Variant(
            uri=f"{self.name}/index.m3u8",
            bandwidth=bandwidth,
            average_bandwidth=int(average or nominal * 1.05) or bandwidth,
            codecs=self.codecs,
            width=self.info.width,
            height=self.info.height,
            frame_rate=self.info.fps or None,
        )


def _track(info: RenditionInfo, track_id: int) -> TrackInfo:
    if info.kind is MediaKind.VIDEO:
        return TrackInfo(
            track_id, "video", info.timescale, info.extradata, width=info.width, height=info.height
        )
    return TrackInfo(
        track_id,
        "audio",
        info.timescale,
        info.extradata,
        sample_rate=info.sample_rate,
        channels=info.channels,
    )


class LivePackage:
    """All renditions of one stream; the transcoder's sink (see ``transcode.output``)."""

    def __init__(
        self,
        stream_id: str,
        config: PackagerConfig,
        clock: Callable[[], float] = time.time,
        listener: PackageListener | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.listener = listener
        self.config = config
        self.renditions: dict[str, RenditionOutput] = {}
        self.audio: RenditionInfo | None = None
        self.ladder_ready = asyncio.Event()
        self.ended = False
        # Sequence numbers start from the wall clock, so a restarted server never reuses a
        # part or segment URI that a CDN may still hold (they are cached as immutable).
        self.first_msn = int(clock() // float(config.segment_duration))
        self.timeline_offset = TIMELINE_START
        self._epoch: float | None = None  # wall clock of packaged time 0
        self._backlog: list[EncodedPacket] = []
        self._session_end = TIMELINE_START
        self.clock = clock
        self._infos: dict[str, RenditionInfo] = {}
        self.tags = TagTimeline()
        #: Bumped on every change any playlist of the stream shows (parts, tags, end).
        self.version = 0
        self._event_ids = 0
        self._ladder: list[str] = []

    # -- TranscodeSink -----------------------------------------------------------------
    def on_rendition(self, info: RenditionInfo) -> None:
        self._infos[info.name] = info
        if info.kind is MediaKind.AUDIO:
            self.audio = info

    def on_ladder(self, infos: list[RenditionInfo]) -> None:
        videos = [i for i in infos if i.kind is MediaKind.VIDEO]
        leads = videos or [i for i in infos if i.kind is MediaKind.AUDIO][:1]
        audio = self.audio if videos else None
        for info in leads:
            if info.name not in self.renditions:
                self.renditions[info.name] = RenditionOutput(self, info, audio)
        for packet in self._backlog:
            self._route(packet)
        self._backlog.clear()
        self._ladder = [i.name for i in sorted(leads, key=lambda i: -i.bitrate)]
        self.ladder_ready.set()

    def on_packet(self, packet: EncodedPacket) -> None:
        if self.listener is not None:
            self.listener.packet(self.stream_id, packet.rendition, self.clock() - packet.arrival)
        if self._epoch is None:
            info = self._infos[packet.rendition]
            self._epoch = packet.arrival - float(
                self.timeline_offset + Fraction(packet.pts, info.timescale)
            )
        if not self.renditions:
            # The ladder is final only after the source's first GOP: hold what comes before.
            self._backlog.append(packet)
            if len(self._backlog) > _MAX_BACKLOG:
                del self._backlog[0]  # bounded memory, should the ladder never come
            return
        self._route(packet)

    def _route(self, packet: EncodedPacket) -> None:
        rendition = self.renditions.get(packet.rendition)
        if rendition is not None:
            rendition.push(packet)
            self._session_end = max(
                self._session_end,
                rendition.cutter.offset
                + Fraction(packet.dts + packet.duration, rendition.info.timescale),
            )
        elif self.audio is not None and packet.rendition == self.audio.name:
            for r in self.renditions.values():
                r.cutter.push_audio(packet)

    def on_end(self) -> None:
        for r in self.renditions.values():
            r.flush()

    # -- stream life -------------------------------------------------------------------
    def on_grid(self, seconds: Fraction) -> Fraction:
        """``seconds`` snapped to the video frame grid.

        A passthrough rung keeps the source's millisecond timestamps while re-encoded rungs sit
        on the 1/fps grid; snapping what gets a PROGRAM-DATE-TIME makes the same frame carry the
        same date on every rendition (LLHLS_RULES: PDT consistent across renditions).
        """
        fps = next((r.info.fps for r in self.renditions.values() if r.info.fps), None)
        return Fraction(round(seconds * fps)) / fps if fps else seconds

    def program_date_time(self, seconds: Fraction) -> float:
        """Wall-clock time of a packaged timestamp: the same on every rendition."""
        return (self._epoch or self.clock()) + float(seconds)

    def continue_after_reconnect(self) -> None:
        """A publisher came back: later media follows a discontinuity, timestamps keep rising."""
        # On the frame grid, so grid-snapped times stay consistent across the discontinuity.
        self.timeline_offset = self.on_grid(self._session_end + self.config.segment_duration)
        self._epoch = None
        for r in self.renditions.values():
            r.cutter = PartCutter(
                r.lead, r.cutter.audio, self.config.part_target, self.config.segment_duration
            )
            r.cutter.set_offset(self.timeline_offset)
            r.mark_discontinuity()

    def finish(self) -> None:
        """No publisher came back: ENDLIST on every playlist; they stay servable."""
        self.ended = True
        for r in self.renditions.values():
            r.end()

    def prepare_tag(
        self,
        tag_id: str,
        kind: str,
        time: Fraction,
        payload: dict[str, Any],
        *,
        duration: float | None = None,
        product_id: str | None = None,
    ) -> Tag:
        """A tag at ``time`` (seconds on the current session's output timeline), snapped to the
        video frame grid, with the program date-time of that frame; nothing is placed yet."""
        time = self.on_grid(time)
        packaged = self.timeline_offset + time
        return Tag(
            id=tag_id,
            kind=kind,
            time=packaged,
            program_date_time=self.program_date_time(packaged),
            payload=payload,
            duration=duration,
            product_id=product_id,
            added_at=self.clock(),
        )

    def place_tag(self, tag: Tag) -> bool:
        """Put ``tag`` into every rendition: DATERANGE in the playlists, emsg ID3 in the part
        holding its frame. Returns whether it came late (that part was already published, so
        the emsg rides in the next part, still with the frame's time)."""
        data = tag.id3()
        time = tag.time - self.timeline_offset
        late = False
        for r in self.renditions.values():
            ts = r.lead.timescale

            def make(pts: int, ts: int = ts) -> Emsg:
                return Emsg(ts, pts, self._next_event_id(), data)

            late |= not r.cutter.add_tag(round(time * ts), make)
        self.tags.add(tag)
        for r in self.renditions.values():
            r._notify()
        return late

    def add_tag(
        self,
        tag_id: str,
        kind: str,
        time: Fraction,
        payload: dict[str, Any],
        *,
        duration: float | None = None,
        product_id: str | None = None,
    ) -> tuple[Tag, bool]:
        """``prepare_tag`` then ``place_tag``."""
        tag = self.prepare_tag(
            tag_id, kind, time, payload, duration=duration, product_id=product_id
        )
        return tag, self.place_tag(tag)

    def session_time_of(self, program_date_time: float) -> Fraction | None:
        """Inverse of the PDT mapping: seconds on the current session's output timeline."""
        if self._epoch is None:
            return None
        return Fraction(program_date_time - self._epoch) - self.timeline_offset

    def live_window(self) -> tuple[Fraction, Fraction] | None:
        """(oldest listed, newest cut) times on the current session's output timeline."""
        starts = [r.state.segments[0].start for r in self.renditions.values() if r.state.segments]
        ends = [
            Fraction(r.cutter.cut_until or 0, r.lead.timescale) for r in self.renditions.values()
        ]
        if not starts:
            return None
        return max(starts) - self.timeline_offset, max(ends)

    def _next_event_id(self) -> int:
        self._event_ids += 1
        return self._event_ids & 0xFFFFFFFF

    def dateranges(self) -> list[DateRangeLine]:
        """DATERANGE lines for every media playlist; identical across renditions."""
        settled_before = self.clock() - float(6 * self.config.target_duration) / 2
        return [
            DateRangeLine(
                t.id,
                t.daterange,
                t.program_date_time,
                t.added_at <= settled_before,
            )
            for t in self.tags.tags
        ]

    def top_rendition(self) -> RenditionOutput | None:
        """The top rung: the largest picture (a passthrough rung's bitrate is only nominal)."""
        videos = [r for r in self.renditions.values() if r.info.kind is MediaKind.VIDEO]
        return max(videos, key=lambda r: (r.info.height, r.info.bitrate), default=None)

    def multivariant(self) -> str:
        return render_multivariant_playlist(
            [self.renditions[name].variant() for name in self._ladder if name in self.renditions]
        )
