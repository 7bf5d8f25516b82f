"""One rendition's live output: its parts and segments as they are cut, the window kept in
memory, and its media playlist."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, MutableMapping
from fractions import Fraction
from typing import Protocol

from ingest.media import MediaKind
from packager import blocking
from packager.config import PackagerConfig
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
    segment_uri,
)
from packager.segmenter import AUDIO_TRACK_ID, VIDEO_TRACK_ID, CutPart, PartCutter, TrackTiming
from packager.show import ShowTimeline
from packager.waiters import ChangeSignal
from transcode.output import EncodedPacket, RenditionInfo


class StreamView(Protocol):
    """What a rendition's playlist shows of the stream around it (``LivePackage`` gives it)."""

    @property
    def version(self) -> int:
        """Bumped on every change any playlist of the stream shows (parts, tags, end)."""

    def rendition_reports(self, exclude: str) -> list[RenditionReport]:
        """EXT-X-RENDITION-REPORTs of every rendition but ``exclude``."""

    def dateranges(self) -> list[DateRangeLine]:
        """DATERANGE lines, identical in every rendition's playlist."""

    def removed_dateranges(self) -> list[str]:
        """IDs of ranges recently dropped (S 4.4.5.2: RECENTLY-REMOVED-DATERANGES)."""


class RenditionFiles(MutableMapping[str, bytes]):
    """A rendition's servable files by name: its inits, parts and segments.

    A segment is kept as its parts' bytes and joined on its first read: low-latency players
    fetch parts, so most segments are never read whole, and the recorder writes the parts one
    after another (a join was a fifth of the packager's time at 150 publishers).
    """

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._unjoined: dict[str, tuple[bytes, ...]] = {}

    def add_unjoined(self, name: str, parts: tuple[bytes, ...]) -> None:
        """``name`` is the concatenation of ``parts`` (joined when first read)."""
        self._files.pop(name, None)
        self._unjoined[name] = parts

    def chunks(self, name: str) -> tuple[bytes, ...]:
        """``name``'s bytes as the buffers they are held in (joined or not); KeyError if none."""
        data = self._files.get(name)
        return (data,) if data is not None else self._unjoined[name]

    def discard(self, name: str) -> None:
        """Forget ``name`` if it is held (never joins it)."""
        self._files.pop(name, None)
        self._unjoined.pop(name, None)

    def __getitem__(self, name: str) -> bytes:
        data = self._files.get(name)
        if data is None:
            data = self._files[name] = b"".join(self._unjoined.pop(name))
        return data

    def __contains__(self, name: object) -> bool:
        return name in self._files or name in self._unjoined

    def __setitem__(self, name: str, data: bytes) -> None:
        self._unjoined.pop(name, None)
        self._files[name] = data

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.discard(name)

    def __iter__(self) -> Iterator[str]:
        return iter([*self._files, *self._unjoined])  # a copy: reading joins (moves) entries

    def __len__(self) -> int:
        return len(self._files) + len(self._unjoined)


class RenditionOutput:
    """One rendition's live playlist, its parts and segments, and the requests waiting on them."""

    def __init__(
        self,
        info: RenditionInfo,
        audio: RenditionInfo | None,
        config: PackagerConfig,
        show: ShowTimeline,
        stream: StreamView,
    ) -> None:
        self.info = info
        self.name = info.name
        self.config = config
        self.show = show
        self.stream = stream
        self.state = MediaPlaylistState(config.target_duration, config.part_target)
        lead_id = VIDEO_TRACK_ID if info.kind is MediaKind.VIDEO else AUDIO_TRACK_ID
        self.lead = TrackTiming(lead_id, info.timescale)
        self.audio = audio
        self._audio_timing = (
            TrackTiming(AUDIO_TRACK_ID, audio.timescale) if audio is not None else None
        )
        self._cutter = self._new_cutter(show.offset)
        tracks = [_track(info, lead_id)]
        if audio is not None:
            tracks.append(_track(audio, AUDIO_TRACK_ID))
        self.codecs = ",".join(
            [info.codec_string] + ([audio.codec_string] if audio is not None else [])
        )
        # The rendition's init segment: made once, here.
        self.files = RenditionFiles()
        self.files[self.state.init_uri] = init_segment(tracks)
        self.changes = ChangeSignal()
        self._cache: dict[tuple[str | None, int], str] = {}
        self._cache_version = -1
        self._segment_parts: list[bytes] = []
        self._bytes_in_segments: list[tuple[int, Fraction]] = []  # (bytes, seconds) per segment
        self._parts_dropped_until = -1  # msn up to which part files were dropped (see _prune)
        # A show continued from another origin starts after a discontinuity, numbered above
        # the previous owner's (see ShowTimeline.first_discontinuity_sequence).
        self.state.discontinuity_sequence = show.first_discontinuity_sequence
        self._pending_discontinuity = show.continued
        self._map_uri: str | None = None  # the init of segments opened from now on (None: main)
        self.frame_latency: collections.deque[float] = collections.deque(maxlen=4096)

    def _new_cutter(self, offset: Fraction) -> PartCutter:
        cfg = self.config
        cutter = PartCutter(self.lead, self._audio_timing, cfg.part_target, cfg.segment_duration)
        cutter.set_offset(offset)
        return cutter

    # -- input -------------------------------------------------------------------------
    def push(self, packet: EncodedPacket) -> CutPart | None:
        """Add a lead packet; returns the part it completed and published, if any."""
        part = self._cutter.push_lead(packet)
        if part is not None:
            self._publish(part)
        return part

    def push_audio(self, packet: EncodedPacket) -> None:
        """Add an audio packet; it rides in the lead track's parts."""
        self._cutter.push_audio(packet)

    def flush(self) -> CutPart | None:
        """Publish the last part at the end of the stream."""
        part = self._cutter.flush()
        if part is not None:
            self._publish(part)
        return part

    def continue_at(self, offset: Fraction, map_uri: str | None = None) -> None:
        """Another source follows (the publisher came back, or the slate): cut anew from
        ``offset``, after a discontinuity; ``map_uri`` names its init when it is not the main
        one (an init added with :meth:`add_init`)."""
        self._cutter = self._new_cutter(offset)
        self._map_uri = map_uri
        self.mark_discontinuity()

    def add_init(self, uri: str, tracks: list[RenditionInfo]) -> None:
        """Keep another init segment (the slate's) servable beside the main one."""
        ids = [VIDEO_TRACK_ID if t.kind is MediaKind.VIDEO else AUDIO_TRACK_ID for t in tracks]
        self.files[uri] = init_segment([_track(t, i) for t, i in zip(tracks, ids, strict=True)])

    def mark_discontinuity(self) -> None:
        """The next segment follows a discontinuity (S 4.4.4.3: EXT-X-DISCONTINUITY)."""
        self._pending_discontinuity = True

    def stamp_tag(self, time: Fraction, id3: bytes, next_event_id: Callable[[], int]) -> bool:
        """Put ``id3`` in an emsg before the part holding the frame at ``time`` (session time).

        Returns False when that part was already published (the box rides in the next one).
        """
        ts = self.lead.timescale

        def make(pts: int) -> Emsg:
            return Emsg(ts, pts, next_event_id(), id3)

        return self._cutter.add_tag(round(time * ts), make)

    def end(self) -> None:
        """ENDLIST: the playlist is final and stays servable."""
        self.state.ended = True

    def _publish(self, cut: CutPart) -> None:
        st = self.state
        ts = self.info.timescale
        if cut.starts_segment or not st.segments or st.segments[-1].complete:
            self._open_segment(Fraction(cut.start, ts))
        seg = st.segments[-1]
        idx = len(seg.parts)
        uri = part_uri(seg.msn, idx)
        self.files[uri] = cut.data
        self._segment_parts.append(cut.data)
        seg.parts.append(Part(idx, Fraction(cut.duration, ts), cut.independent, uri))
        if cut.ends_segment:
            self._complete_segment(seg)
        # Server-added latency per frame: ingest arrival → its part listed in the playlist.
        now = self.show.clock()
        self.frame_latency.extend(now - a for a in cut.arrivals)

    def _open_segment(self, start: Fraction) -> None:
        st = self.state
        msn = st.segments[-1].msn + 1 if st.segments else self.show.first_msn
        show = self.show
        st.segments.append(
            Segment(
                msn=msn,
                start=start,
                program_date_time=show.program_date_time(show.on_grid(start)),
                uri=segment_uri(msn),
                discontinuity=self._pending_discontinuity,
                map_uri=self._map_uri,
            )
        )
        self._pending_discontinuity = False
        self._segment_parts = []

    def _complete_segment(self, seg: Segment) -> None:
        """The segment's last part is published: the segment file exists from here on."""
        seg.complete = True
        parts = tuple(self._segment_parts)  # a segment is exactly its parts' bytes
        self.files.add_unjoined(seg.uri, parts)
        self._bytes_in_segments.append((sum(map(len, parts)), seg.duration))
        del self._bytes_in_segments[: -self.config.window_segments]
        self._prune()

    def _prune(self) -> None:
        st = self.state
        excess = len([s for s in st.segments if s.complete]) - self.config.window_segments
        for seg in st.segments[: max(excess, 0)]:
            self.files.discard(seg.uri)
            for p in seg.parts:
                self.files.discard(p.uri)
            if seg.discontinuity:
                st.discontinuity_sequence += 1
        if excess > 0:
            del st.segments[:excess]
        # S 6.2.2: parts leave the playlist after 3 target durations; keep their files
        # servable for 3 more, then drop them (the segment carries the same bytes).
        horizon = Fraction(6 * st.target_duration)
        age = Fraction(0)
        dropped_until = self._parts_dropped_until
        for seg in reversed(st.segments):
            if age > horizon:
                if seg.msn <= dropped_until:
                    break  # its part files, and every older segment's, are gone already
                self._parts_dropped_until = max(self._parts_dropped_until, seg.msn)
                for p in seg.parts:
                    self.files.discard(p.uri)
            age += seg.duration

    # -- waiting -----------------------------------------------------------------------
    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Sleep until ``ready()`` holds after a change, at most ``timeout`` s; no polling."""
        return await self.changes.wait_until(ready, timeout)

    # -- queries -----------------------------------------------------------------------
    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist already satisfies ``_HLS_msn``/``_HLS_part`` (S 6.2.5.2)."""
        return blocking.satisfied(self.state, msn, part)

    @property
    def cut_until(self) -> Fraction:
        """Session time up to which parts are cut (tags before it come late)."""
        return Fraction(self._cutter.cut_until or 0, self.lead.timescale)

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
        version = self.stream.version
        if self._cache_version != version:
            self._cache.clear()
            self._cache_version = version
        key = (skip, int(self.show.clock()) if skip == "v2" else 0)
        text = self._cache.get(key)
        if text is None:
            text = self._cache[key] = self._render(skip)
        return text

    def _render(self, skip: str | None) -> str:
        stream = self.stream
        return render_media_playlist(
            self.state,
            stream.rendition_reports(exclude=self.name),
            skip=skip,
            dateranges=stream.dateranges(),
            recently_removed=stream.removed_dateranges(),
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
