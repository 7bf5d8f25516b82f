"""Live packaging of one stream: transcoder output in, playlists and parts held for the origin.

``LivePackage`` composes the stream's parts: the show's timeline (``packager.show``), one
``RenditionOutput`` per rendition (``packager.rendition``), tag placement
(``packager.tag_placement``) and the waiters each rendition wakes (``packager.waiters``).
Only the live window is kept in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from ingest.media import MediaKind
from packager.config import PackagerConfig
from packager.playlist import DateRangeLine, RenditionReport, render_multivariant_playlist
from packager.rendition import RenditionOutput
from packager.segmenter import CutPart
from packager.show import ShowStart, ShowTimeline
from packager.slate import SlateLoop
from packager.tag_placement import TagPlacer
from packager.tags import Tag, TagTimeline
from transcode.output import EncodedPacket, RenditionInfo
from transcode.slate import SlateClip

if TYPE_CHECKING:
    from packager.recorder import SegmentSink

__all__ = ["LivePackage", "PackageListener", "PackagerConfig", "ShowStart"]

log = logging.getLogger(__name__)

_MAX_BACKLOG = 20_000
#: Seconds of slate listed at once when a drop is noticed late (a gap_timeout, at most).
_MAX_SLATE_CATCH_UP = 5.0


class PackageListener(Protocol):
    """Told about packaging events (for metrics); the packager knows nothing of who listens."""

    def packet(self, stream: str, rendition: str, lag_seconds: float) -> None:
        """A packet left the encoder ``lag_seconds`` after ingest received its source frame."""

    def part(
        self, stream: str, rendition: str, lateness_seconds: float, ends_segment: bool
    ) -> None:
        """A part was listed ``lateness_seconds`` after ingest received its last frame."""


class LivePackage:
    """All renditions of one stream; the transcoder's sink (see ``transcode.output``)."""

    def __init__(
        self,
        stream_id: str,
        config: PackagerConfig,
        clock: Callable[[], float] = time.time,
        listener: PackageListener | None = None,
        start: ShowStart | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.listener = listener
        #: Told of every init and completed segment (the recorder), when set.
        self.sink: SegmentSink | None = None
        self.config = config
        self.show = ShowTimeline(config.segment_duration, clock, start)
        self.tag_placer = TagPlacer(self.show, config.target_duration)
        self.renditions: dict[str, RenditionOutput] = {}
        self.audio: RenditionInfo | None = None
        self.ladder_ready = asyncio.Event()
        #: Set once the playlists may be served: with the ladder, or for a show continued from
        #: another origin once every rendition lists a whole segment (see ``_published``).
        self.playlists_ready = asyncio.Event()
        self.ended = False
        self._backlog: list[EncodedPacket] = []
        self._infos: dict[str, RenditionInfo] = {}
        #: Bumped on every change any playlist of the stream shows (parts, tags, end).
        self.version = 0
        self._ladder: list[str] = []
        #: Each rendition's slate, once encoded (see ``set_slate``).
        self.slate_clips: dict[str, SlateClip] = {}
        self._slate_maps: dict[str, str] = {}  # rendition → its slate's own init, if it needs one
        self._slate: dict[str, SlateLoop] | None = None  # playing while not None
        self._slate_started = 0.0
        self._slate_seconds = 0.0  # on slate before the current stretch
        #: The input whose media the renditions carry (``main``, or a named input after a switch).
        self.input = "main"

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock (the show's: every part of the package reads the same one)."""
        return self.show.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.show.clock = clock

    @property
    def tags(self) -> TagTimeline:
        return self.tag_placer.timeline

    @property
    def timeline_offset(self) -> Fraction:
        """Packaged time of the current publisher session's time 0."""
        return self.show.offset

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
                r = self.renditions[info.name] = RenditionOutput(
                    info, audio, self.config, self.show, self
                )
                if self.sink is not None:  # a recording starts with every rendition's init
                    init = r.files[r.state.init_uri]
                    self.sink.rendition_started(
                        r.name, init, r.variant(), info.timescale, r.lead.track_id
                    )
        self.show.frame_rate = next(
            (r.info.fps for r in self.renditions.values() if r.info.fps), None
        )
        for packet in self._backlog:
            self._route(packet)
        self._backlog.clear()
        self._ladder = [i.name for i in sorted(leads, key=lambda i: -i.bitrate)]
        self.ladder_ready.set()
        if not self.show.continued:
            self.playlists_ready.set()

    def on_packet(self, packet: EncodedPacket) -> None:
        if self._slate is not None:
            return  # the slate holds the renditions until the publisher's return is set up
        if self.listener is not None:
            self.listener.packet(self.stream_id, packet.rendition, self.clock() - packet.arrival)
        if not self.show.pinned:
            info = self._infos[packet.rendition]
            self.show.pin_clock(packet.arrival, Fraction(packet.pts, info.timescale))
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
            part = rendition.push(packet)
            if part is not None:
                self._published(rendition, part)
            self.show.media_until_ticks(packet.dts + packet.duration, rendition.info.timescale)
        elif self.audio is not None and packet.rendition == self.audio.name:
            for r in self.renditions.values():
                r.push_audio(packet)

    def on_end(self) -> None:
        if self._slate is not None:
            return  # the slate's cutters are not the ended source's
        for r in self.renditions.values():
            part = r.flush()
            if part is not None:
                self._published(r, part)

    def _published(self, rendition: RenditionOutput, part: CutPart) -> None:
        """``rendition`` listed ``part``: prune tags with the window, tell the listener, wake."""
        segments = rendition.state.segments
        if segments:
            self.tag_placer.open_show(segments[0].program_date_time)
        if not self.playlists_ready.is_set() and all(
            r.state.segments and r.state.segments[0].complete for r in self.renditions.values()
        ):
            # A player coming from the previous owner reads a playlist without a whole segment
            # as empty (hls.js: levelEmptyError, then it restarts its live start): the
            # continued show's playlists appear with their first segment.
            self.playlists_ready.set()
        if part.ends_segment and segments and self.sink is not None:
            done = segments[-1]
            self.sink.segment_completed(rendition.name, done, rendition.files.chunks(done.uri))
        if part.ends_segment and segments:
            self.tag_placer.prune(
                segments[0].program_date_time, float(rendition.state.can_skip_until)
            )
        if self.listener is not None and part.arrivals:
            self.listener.part(
                self.stream_id,
                rendition.name,
                self.clock() - part.arrivals[-1],
                part.ends_segment,
            )
        self._changed([rendition])

    def _changed(self, renditions: Iterable[RenditionOutput]) -> None:
        self.version += 1
        for r in renditions:
            r.changes.notify()

    # -- stream life -------------------------------------------------------------------
    def program_date_time(self, seconds: Fraction) -> float:
        """Wall-clock time of a packaged timestamp: the same on every rendition."""
        return self.show.program_date_time(seconds)

    def continue_after_reconnect(self) -> None:
        """A publisher came back: later media follows a discontinuity, timestamps keep rising."""
        offset = self.show.continue_after_reconnect()
        for r in self.renditions.values():
            r.continue_at(offset)

    def restore_tags(self, tags: Iterable[Tag]) -> int:
        """List the DATERANGEs of a continued show's earlier tags (placed by the origin that
        owned it before), with their original IDs and dates, in every playlist; ranges the
        previous owner could no longer list (ended before its window) stay out. Returns how
        many were listed."""
        window = float(self.config.window_segments * self.config.segment_duration)
        restored = self.tag_placer.restore(tags, self.clock() - window)
        self._changed(self.renditions.values())
        return restored

    def finish(self) -> None:
        """No publisher came back: ENDLIST on every playlist; they stay servable."""
        self.stop_slate()
        self.ended = True
        for r in self.renditions.values():
            r.end()
        self._changed(self.renditions.values())

    # -- the slate (continuity) --------------------------------------------------------
    @property
    def active_input(self) -> str:
        """``"slate"`` while the slate plays, else the input feeding the ladder."""
        return "slate" if self._slate is not None else self.input

    def switch_input(
        self, name: str, start: Fraction, inits: dict[str, list[RenditionInfo]]
    ) -> Fraction:
        """Input ``name`` takes over from its frame at ``start`` (its session time, an IDR on
        every rendition): every rendition goes on after a discontinuity on the same PDT grid,
        so no time is skipped. ``inits``: the new input's tracks of renditions whose bitstream
        differs from the rendition's own init (a passthrough rung of another camera), each
        announced with its own EXT-X-MAP. Returns the packaged time of the switch frame."""
        for r in self.renditions.values():  # what the last input left in the cutters
            part = r.flush()
            if part is not None:
                self._published(r, part)
        offset = self.show.continue_on_switch(start)
        for rname, r in self.renditions.items():
            map_uri = None
            tracks = inits.get(rname)
            if tracks is not None:
                digest = hashlib.sha256(b"".join(t.extradata for t in tracks)).hexdigest()
                map_uri = f"input-{self.show.first_msn}-{digest[:12]}.mp4"
                if map_uri not in r.files:
                    r.add_init(map_uri, tracks)
                    if self.sink is not None:
                        self.sink.init_added(rname, map_uri, r.files[map_uri])
            r.continue_at(offset, map_uri)
        self.input = name
        self._changed(self.renditions.values())
        return offset + start

    @property
    def slate_seconds(self) -> float:
        """Wall-clock seconds this show has spent on slate."""
        current = self.clock() - self._slate_started if self._slate is not None else 0.0
        return self._slate_seconds + current

    def set_slate(self, clips: dict[str, SlateClip]) -> None:
        """Each rendition's slate (encoded off the loop). A slate whose avcC differs from its
        rendition's (a passthrough rung) gets its own init segment, announced with EXT-X-MAP."""
        for name, clip in clips.items():
            r = self.renditions.get(name)
            if r is None or clip.video_info is None:
                continue
            if clip.video_info.extradata != r.info.extradata:
                uri = f"slate-{self.show.first_msn}.mp4"  # per show: inits are cached for good
                r.add_init(uri, [clip.video_info, *([r.audio] if r.audio else [])])
                self._slate_maps[name] = uri
                if self.sink is not None:
                    self.sink.init_added(name, uri, r.files[uri])
        self.slate_clips = clips

    def start_slate(self) -> bool:
        """Every rendition continues with its slate after a discontinuity, on the same PDT
        grid; the first slate part is listed at once. False when there is no slate to play."""
        if self.ended or self._slate is not None or not self.renditions:
            return False
        if any(name not in self.slate_clips for name in self.renditions):
            return False
        for r in self.renditions.values():  # what the last source left in the cutters
            part = r.flush()
            if part is not None:
                self._published(r, part)
        offset = self.show.continue_on_slate()
        audio_name = self.audio.name if self.audio is not None else ""
        self._slate = {}
        for name, r in self.renditions.items():
            r.continue_at(offset, self._slate_maps.get(name))
            self._slate[name] = SlateLoop(name, self.slate_clips[name], audio_name)
        # The slate starts where the media stopped on the PDT grid. A drop noticed late (a
        # media gap) leaves that time unlisted: list it at once, so the edge stays live.
        now = self.clock()
        behind = now - self.show.program_date_time(offset)
        self._slate_started = now - min(max(behind, 0.0), _MAX_SLATE_CATCH_UP)
        self.advance_slate()
        return True

    def advance_slate(self) -> None:
        """List the slate up to one part target ahead of the wall clock (call it often)."""
        if self._slate is None:
            return
        now = self.clock()
        pt = self.config.part_target
        until = Fraction(now - self._slate_started).limit_denominator(10_000) + pt
        for name, loop in self._slate.items():
            r = self.renditions[name]
            if r.info.kind is MediaKind.VIDEO:
                # Audio first, a part further: a part takes the audio that falls inside it.
                for packet in loop.audio_until(until + pt, now):
                    r.push_audio(packet)
                lead = loop.video_until(until, now)
            else:
                lead = loop.audio_until(until, now)
            for packet in lead:
                part = r.push(packet)
                if part is not None:
                    self._published(r, part)
                self.show.media_until_ticks(packet.dts + packet.duration, r.lead.timescale)

    def stop_slate(self) -> float:
        """End the slate: its last part is listed; the next source follows a discontinuity.
        Returns how long this stretch of slate lasted (0 when not on slate)."""
        if self._slate is None:
            return 0.0
        for r in self.renditions.values():
            part = r.flush()
            if part is not None:
                self._published(r, part)
        stretch = self.clock() - self._slate_started
        self._slate_seconds += stretch
        self._slate = None
        self._changed(self.renditions.values())
        return stretch

    def slate_time(self) -> Fraction | None:
        """Session time of the newest slate frame handed to the renditions (a tag posted on
        slate lands on it, like a live tag on the newest ingested frame)."""
        if self._slate is None:
            return None
        return min(loop.newest_time for loop in self._slate.values())

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
        """See ``TagPlacer.prepare``: the tag at ``time`` on the current session's timeline."""
        return self.tag_placer.prepare(
            tag_id, kind, time, payload, duration=duration, product_id=product_id
        )

    def place_tag(self, tag: Tag) -> bool:
        """Put ``tag`` into every rendition: DATERANGE in the playlists, emsg ID3 in the part
        holding its frame. Returns whether it came late (that part was already published, so
        the emsg rides in the next part, still with the frame's time)."""
        late = self.tag_placer.place(tag, self.renditions.values())
        self._changed(self.renditions.values())
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
        return self.show.session_time_of(program_date_time)

    def live_window(self) -> tuple[Fraction, Fraction] | None:
        """(oldest listed, newest cut) times on the current session's output timeline."""
        starts = [r.state.segments[0].start for r in self.renditions.values() if r.state.segments]
        ends = [r.cut_until for r in self.renditions.values()]
        if not starts:
            return None
        return max(starts) - self.show.offset, max(ends)

    # -- what every media playlist shows of the stream (rendition.StreamView) -----------
    def rendition_reports(self, exclude: str) -> list[RenditionReport]:
        return [
            r
            for other in self.renditions.values()
            if other.name != exclude and (r := other.report()) is not None
        ]

    def dateranges(self) -> list[DateRangeLine]:
        return self.tag_placer.dateranges()

    def removed_dateranges(self) -> list[str]:
        return self.tag_placer.removed_ids()

    def top_rendition(self) -> RenditionOutput | None:
        """The top rung: the largest picture (a passthrough rung's bitrate is only nominal)."""
        videos = [r for r in self.renditions.values() if r.info.kind is MediaKind.VIDEO]
        return max(videos, key=lambda r: (r.info.height, r.info.bitrate), default=None)

    def multivariant(self) -> str:
        return render_multivariant_playlist(
            [self.renditions[name].variant() for name in self._ladder if name in self.renditions]
        )
