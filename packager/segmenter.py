"""Where to cut: parts of at most PART-TARGET, segments at IDRs, audio riding along (sans-I/O).

Audio is muxed into every video rendition rather than offered as its own rendition: one
request per part per viewer (half the blocking requests an origin or edge has to hold), and
audio and video of a part always arrive together, which is what a sub-second buffer wants.
The AAC track is ~128 kbit/s, so repeating it per rung costs little.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from packager.fmp4 import Emsg, part_fragment
from transcode.output import EncodedPacket

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2


@dataclass(frozen=True, slots=True)
class TrackTiming:
    """A track's id and timescale as this rendition's fragments carry them."""

    track_id: int
    timescale: int


@dataclass(frozen=True, slots=True)
class CutPart:
    """A finished part: its bytes and where it sits on the lead track's timeline."""

    data: bytes
    start: int  # lead-track dts of its first sample, in the lead timescale
    duration: int  # lead-track ticks
    independent: bool  # starts with an IDR (S 4.4.4.9: INDEPENDENT=YES)
    starts_segment: bool
    ends_segment: bool
    first_arrival: float  # ingest wall clock of its first lead sample
    arrivals: tuple[float, ...]  # ingest wall clock of each lead sample
    sample_pts: tuple[int, ...]  # lead-track pts of its samples (for tag placement)


class PartCutter:
    """Groups one rendition's packets into CMAF chunks (parts) and marks segment starts.

    The lead track (video, or audio for an audio-only stream) decides the cuts; audio packets
    join the part being closed when their time falls before its end. ``offset`` (in seconds)
    is added to every timestamp so decode times stay positive across B-frames, AAC priming and
    publisher reconnects.
    """

    def __init__(
        self,
        lead: TrackTiming,
        audio: TrackTiming | None,
        part_target: Fraction,
        segment_target: Fraction,
    ) -> None:
        self.lead = lead
        self.audio = audio
        self.part_target_ticks = int(part_target * lead.timescale)
        self.segment_target_ticks = int(segment_target * lead.timescale)
        self.offset = Fraction(0)
        self._lead_offset = 0
        self._audio_offset = 0
        self._part: list[EncodedPacket] = []
        self._audio: collections.deque[EncodedPacket] = collections.deque()
        self._segment_start: int | None = None
        self._part_starts_segment = False
        self._sequence = 0
        self._tags: list[tuple[int, Callable[[int], Emsg]]] = []
        self.cut_until: int | None = None  # input lead time up to which parts are cut

    def set_offset(self, seconds: Fraction) -> None:
        """Shift every later timestamp by ``seconds`` (a reconnect continues the timeline)."""
        self.offset = seconds
        self._lead_offset = int(seconds * self.lead.timescale)
        if self.audio is not None:
            self._audio_offset = int(seconds * self.audio.timescale)

    def add_tag(self, ticks: int, make_emsg: Callable[[int], Emsg]) -> bool:
        """Stamp a tag on the lead frame nearest to ``ticks`` (input timeline).

        ``make_emsg`` receives the presentation time (output timeline) and builds the box that
        goes in front of the part holding that frame. Returns False when that part was already
        published: the box then rides in the next part, still with its true time.
        """
        self._tags.append((ticks, make_emsg))
        return self.cut_until is None or ticks >= self.cut_until

    def push_audio(self, packet: EncodedPacket) -> None:
        self._audio.append(packet)

    def push_lead(self, packet: EncodedPacket) -> CutPart | None:
        """Add a lead packet; returns the part it closed, if it closed one."""
        # A segment starts at the first IDR once the segment target is reached (half a frame of
        # slack absorbs millisecond-rounded source timestamps).
        new_segment = self._segment_start is None or (
            packet.keyframe
            and packet.dts - self._segment_start >= self.segment_target_ticks - packet.duration // 2
        )
        done = None
        if self._part:
            too_long = packet.dts + packet.duration - self._part[0].dts > self.part_target_ticks
            if new_segment or too_long:
                done = self._cut(packet.dts, ends_segment=new_segment)
        if new_segment:
            self._segment_start = packet.dts
            self._part_starts_segment = True
        self._part.append(packet)
        return done

    def flush(self) -> CutPart | None:
        """Close the last part at the end of the stream."""
        if not self._part:
            return None
        last = self._part[-1]
        return self._cut(last.dts + last.duration, ends_segment=True)

    def _cut(self, end_dts: int, ends_segment: bool) -> CutPart:
        lead = self._part
        self._part = []
        taken: list[EncodedPacket] = []
        if self.audio is not None:
            # Audio whose time falls before the part's end rides in this part:
            # dts / audio timescale < end_dts / lead timescale, cross-multiplied (exact, no
            # Fraction per audio packet).
            limit = end_dts * self.audio.timescale
            lead_ts = self.lead.timescale
            queued = self._audio
            while queued and queued[0].dts * lead_ts < limit:
                taken.append(queued.popleft())
        self._sequence += 1
        emsgs = self._tag_boxes(lead)
        first = lead[0]
        starts_segment, self._part_starts_segment = self._part_starts_segment, False
        return CutPart(
            # One call per part: samples are read from the packets themselves (no Sample or
            # TrackRun objects per packet), the chunk written into one allocation.
            data=part_fragment(
                self._sequence,
                self.lead.track_id,
                self._lead_offset,
                lead,
                end_dts,
                AUDIO_TRACK_ID if self.audio is None else self.audio.track_id,
                self._audio_offset,
                taken,
                emsgs,
            ),
            start=first.dts + self._lead_offset,
            duration=end_dts - first.dts,
            independent=first.keyframe,
            starts_segment=starts_segment,
            ends_segment=ends_segment,
            first_arrival=first.arrival,
            arrivals=tuple(p.arrival for p in lead),
            sample_pts=tuple(p.pts + self._lead_offset for p in lead),
        )

    def _tag_boxes(self, lead: list[EncodedPacket]) -> list[Emsg]:
        """emsg boxes of the tags whose frame is in (or before) this part (AOM: before moof)."""
        # Frames are nearest to a tag up to half a frame past the part's last presentation time.
        boundary = max(p.pts + p.duration for p in lead) - lead[-1].duration // 2
        self.cut_until = boundary
        boxes, pending = [], []
        for ticks, make in self._tags:
            if ticks >= boundary:
                pending.append((ticks, make))
                continue
            nearest = min(lead, key=lambda p: abs(p.pts - ticks))
            late = ticks < nearest.pts - nearest.duration // 2
            boxes.append(make((ticks if late else nearest.pts) + self._lead_offset))
        self._tags = pending
        return boxes
