"""LL-HLS playlist model and text rendering (draft-pantos-hls-rfc8216bis), pure: no I/O, no clocks.

Section numbers ("S 4.4.4.9") refer to the HLS draft, "A x.y" to Apple's authoring spec.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import NamedTuple

from ingest.shown import shown


def format_pdt(epoch_seconds: float) -> str:
    """ISO 8601 with milliseconds and Z, as EXT-X-PROGRAM-DATE-TIME and DATERANGE use it."""
    dt = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _dec(value: Fraction | float, places: int = 5) -> str:
    return f"{float(value):.{places}f}"


@dataclass
class Part:
    """A published partial segment (S 4.4.4.9)."""

    index: int
    duration: Fraction  # seconds
    independent: bool
    uri: str
    # Its tag line and the fields it was made from: a listed part never changes, and every
    # render of the playlist (one per change while anyone watches) lists it again.
    _line: tuple[Fraction, bool, str, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def line(self) -> str:
        """Its ``#EXT-X-PART`` tag (S 4.4.4.9); INDEPENDENT=YES when it starts with an IDR."""
        cached = self._line
        if (
            cached is None
            or cached[0] is not self.duration
            or cached[1] is not self.independent
            or cached[2] is not self.uri
        ):
            attrs = f'DURATION={_dec(self.duration)},URI="{self.uri}"'
            if self.independent:
                attrs += ",INDEPENDENT=YES"
            cached = self._line = (
                self.duration,
                self.independent,
                self.uri,
                f"#EXT-X-PART:{attrs}",
            )
        return cached[3]


@dataclass
class Segment:
    """A media segment; ``complete`` once its last part is cut (then it has an EXTINF)."""

    msn: int
    start: Fraction  # seconds on the packaged timeline
    program_date_time: float  # epoch seconds of its first frame
    uri: str
    discontinuity: bool = False
    parts: list[Part] = field(default_factory=list)
    #: Its init segment when not the playlist's ``init_uri`` (S 4.4.4.5: EXT-X-MAP).
    map_uri: str | None = None
    complete: bool = False
    # The sum of the parts counted so far (the list, how many, their sum, the last one counted):
    # parts are only appended, and the playlist, the window and delta updates ask for every
    # segment's duration on every change.
    _summed: tuple[list[Part], int, Fraction, Part | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # Its PROGRAM-DATE-TIME and EXTINF lines, each with the value it was made from.
    _pdt_line: tuple[float, str] | None = field(default=None, init=False, repr=False, compare=False)
    _extinf_line: tuple[Fraction, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def pdt_line(self) -> str:
        """``#EXT-X-PROGRAM-DATE-TIME`` of its first frame (A 8.4), formatted once."""
        cached = self._pdt_line
        if cached is None or cached[0] is not self.program_date_time:
            text = f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(self.program_date_time)}"
            cached = self._pdt_line = (self.program_date_time, text)
        return cached[1]

    @property
    def extinf_line(self) -> str:
        """``#EXTINF`` with its duration (S 4.4.4.1), formatted once per duration."""
        duration = self.duration
        cached = self._extinf_line
        if cached is None or cached[0] is not duration:
            cached = self._extinf_line = (duration, f"#EXTINF:{_dec(duration)},")
        return cached[1]

    @property
    def duration(self) -> Fraction:
        """Its parts' durations added up (only the parts appended since the last call)."""
        parts = self.parts
        summed = self._summed
        if (
            summed is None
            or summed[0] is not parts
            or summed[1] > len(parts)
            or (summed[1] and parts[summed[1] - 1] is not summed[3])
        ):
            summed = (parts, 0, Fraction(0), None)  # first call, or the list was replaced or cut
        _, counted, total, _last = summed
        if counted != len(parts):
            total = sum((p.duration for p in parts[counted:]), total)
            self._summed = (parts, len(parts), total, parts[-1])
        return total


@dataclass(frozen=True)
class RenditionReport:
    """``#EXT-X-RENDITION-REPORT`` for a sibling rendition (S 4.4.5.4)."""

    uri: str
    last_msn: int
    last_part: int


@dataclass
class MediaPlaylistState:
    """What a media playlist shows; the live packager mutates it, ``render`` prints it."""

    target_duration: int
    part_target: Fraction
    init_uri: str = "init.mp4"
    segments: list[Segment] = field(default_factory=list)
    discontinuity_sequence: int = 0
    ended: bool = False

    @property
    def part_hold_back(self) -> Fraction:
        # A 14.3: PART-HOLD-BACK at least three part targets (S 4.4.3.8 allows 2×, Apple wants 3×).
        return 3 * self.part_target

    @property
    def can_skip_until(self) -> Fraction:
        # S 4.4.3.8: CAN-SKIP-UNTIL at least six target durations.
        return Fraction(6 * self.target_duration)

    @property
    def last_position(self) -> tuple[int, int] | None:
        """(msn, part index) of the newest part listed, or ``None`` before the first part."""
        for seg in reversed(self.segments):
            if seg.parts:
                return seg.msn, seg.parts[-1].index
        return None

    @property
    def next_part(self) -> tuple[int, int]:
        """Where the next part will go: the PRELOAD-HINT target (S 4.4.5.3)."""
        if not self.segments:
            return 0, 0
        last = self.segments[-1]
        if last.complete:
            return last.msn + 1, 0
        return last.msn, len(last.parts)

    @property
    def media_sequence(self) -> int:
        return self.segments[0].msn if self.segments else 0


@dataclass(frozen=True)
class DateRangeLine:
    """A rendered EXT-X-DATERANGE and when it starts (epoch seconds)."""

    id: str
    text: str
    start: float
    settled: bool = True  # every client that may ask for a delta update has seen it


def render_media_playlist(
    state: MediaPlaylistState,
    reports: Sequence[RenditionReport] = (),
    *,
    skip: str | None = None,
    dateranges: Sequence[DateRangeLine] = (),
    recently_removed: Sequence[str] = (),
) -> str:
    """The media playlist text; ``skip`` ("YES"/"v2") renders a delta update (S 6.2.5.1)."""
    segs = state.segments
    skipped = _skippable(state) if skip in ("YES", "v2") and not state.ended else 0
    skip_ranges = bool(skipped) and skip == "v2"
    # S 8: fMP4 parts need version 6, EXT-X-SKIP 9, skipping date ranges 10.
    version = 10 if skip_ranges else 9 if skipped else 6
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{version}",
        f"#EXT-X-TARGETDURATION:{state.target_duration}",
        # S 6.2.4: the same SERVER-CONTROL on every media playlist of the stream.
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"CAN-SKIP-UNTIL={_dec(state.can_skip_until, 1)},CAN-SKIP-DATERANGES=YES,"
        f"PART-HOLD-BACK={_dec(state.part_hold_back, 3)}",
        # S 4.4.3.7: PART-INF whenever EXT-X-PART appears.
        f"#EXT-X-PART-INF:PART-TARGET={_dec(state.part_target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{state.media_sequence}",
    ]
    if state.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{state.discontinuity_sequence}")
    # S 4.4.4.5: an EXT-X-MAP applies to the segments after it until the next one, so the
    # first listed segment's init comes first and every change of init gets its own tag.
    current_map = segs[skipped].map_uri if len(segs) > skipped else None
    lines.append(f'#EXT-X-MAP:URI="{current_map or state.init_uri}"')
    if skip_ranges:
        # S 4.4.5.2: RECENTLY-REMOVED-DATERANGES is a tab-separated list of IDs.
        removed = "\t".join(recently_removed)
        lines.append(
            f'#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped},RECENTLY-REMOVED-DATERANGES="{removed}"'
        )
        # S 6.2.5.1: ranges the client already holds (they start in the skipped segments)
        # are left out of a v2 delta update.
        boundary = segs[skipped].program_date_time
        dateranges = [d for d in dateranges if not (d.settled and d.start < boundary)]
    elif skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    lines.extend(d.text for d in dateranges)
    parts_from = _parts_listed_from(state)
    for seg in segs[skipped:]:
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.map_uri != current_map:
            # S 4.4.4.3: a new init only after a discontinuity (the segmenter guarantees it).
            current_map = seg.map_uri
            lines.append(f'#EXT-X-MAP:URI="{current_map or state.init_uri}"')
        # A 8.4: PROGRAM-DATE-TIME on every segment, ahead of its parts.
        lines.append(seg.pdt_line)
        if seg.msn >= parts_from:
            # S 3.2: parts come before the EXTINF of their parent segment.
            lines.extend([part.line for part in seg.parts])
        if seg.complete:
            lines.append(seg.extinf_line)
            lines.append(seg.uri)
    if state.ended:
        lines.append("#EXT-X-ENDLIST")
    else:
        msn, idx = state.next_part
        # S 4.4.5.3: one hint per type, for the part that comes next; none after ENDLIST.
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(msn, idx)}"')
    for r in reports:
        lines.append(
            f'#EXT-X-RENDITION-REPORT:URI="{r.uri}",LAST-MSN={r.last_msn},LAST-PART={r.last_part}'
        )
    return "\n".join(lines) + "\n"


def _parts_listed_from(state: MediaPlaylistState) -> int:
    """First msn whose parts are still listed: S 6.2.2 drops parts > 3 target durations old."""
    horizon = Fraction(3 * state.target_duration)
    age = Fraction(0)
    first = state.segments[-1].msn if state.segments else 0
    for seg in reversed(state.segments):
        if age > horizon:
            break
        first = seg.msn
        age += seg.duration
    return first


def _skippable(state: MediaPlaylistState) -> int:
    """Leading segments a delta update may replace: what lies beyond the skip boundary."""
    total_after = sum((s.duration for s in state.segments), Fraction(0))
    count = 0
    for seg in state.segments:
        total_after -= seg.duration
        if total_after < state.can_skip_until or not seg.complete:
            break
        count += 1
    return count


def part_uri(msn: int, index: int) -> str:
    return f"{msn}.{index}.m4s"


def segment_uri(msn: int) -> str:
    return f"{msn}.m4s"


@dataclass(frozen=True)
class Variant:
    """One ``#EXT-X-STREAM-INF`` entry (S 4.4.6.2, A 9.x)."""

    uri: str
    bandwidth: int
    average_bandwidth: int
    codecs: str
    width: int = 0
    height: int = 0
    frame_rate: Fraction | None = None


def render_multivariant_playlist(variants: Sequence[Variant]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        attrs = [
            f"BANDWIDTH={v.bandwidth}",
            f"AVERAGE-BANDWIDTH={v.average_bandwidth}",
            f'CODECS="{v.codecs}"',
        ]
        if v.width:
            attrs.append(f"RESOLUTION={v.width}x{v.height}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={float(v.frame_rate):.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


# -- reading ---------------------------------------------------------------------------------
# The load tools, the edge simulation and the tests read playlists with this one parser: it reads
# what ``render_media_playlist`` writes (and what any LL-HLS origin writes) back into a view.

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_URI = re.compile(r'(?:^|,)URI="([^"]*)"')


class PlaylistSyntaxError(ValueError):
    """A playlist line the reader cannot make sense of (the message names the line, cut short)."""


def tag_attributes(line: str) -> dict[str, str]:
    """The attribute list of a tag line (S 4.2), quotes removed: ``URI="a"`` → {"URI": "a"}."""
    return {k: v.strip('"') for k, v in _ATTRIBUTE.findall(line.partition(":")[2])}


class ListedSegment(NamedTuple):
    """A segment line as a reader sees it, with the tags written before it."""

    msn: int
    uri: str
    duration: float  # its EXTINF
    discontinuity: bool  # EXT-X-DISCONTINUITY right before it
    program_date_time: str  # the last EXT-X-PROGRAM-DATE-TIME written before it, as written


@dataclass
class MediaPlaylistView:
    """What a low-latency client reads from a media playlist; parts are located by counting from
    EXT-X-MEDIA-SEQUENCE and EXT-X-SKIP, not from their names."""

    parts: list[tuple[int, int, str]] = field(default_factory=list)  # (msn, index, uri)
    segments: list[ListedSegment] = field(default_factory=list)  # complete ones
    hint: tuple[int, int] | None = None  # (msn, index) of the PRELOAD-HINT part
    preload_hints: list[tuple[str, str]] = field(default_factory=list)  # (TYPE, URI), S 4.4.5.3
    part_target: float = 0.0
    reports: list[tuple[str, int, int]] = field(default_factory=list)  # (uri, msn, part)
    dateranges: list[str] = field(default_factory=list)  # their IDs, in order
    map_uri: str | None = None
    media_sequence: int = 0
    skipped: int = 0  # EXT-X-SKIP's SKIPPED-SEGMENTS of a delta update
    ended: bool = False
    can_skip: bool = False  # EXT-X-SERVER-CONTROL has CAN-SKIP-UNTIL (delta updates, S 6.2.5.1)

    @property
    def last(self) -> tuple[int, int] | None:
        return self.parts[-1][:2] if self.parts else None


def _required(attrs: dict[str, str], name: str, line: str) -> str:
    value = attrs.get(name)
    if value is None:
        raise PlaylistSyntaxError(f"{name} missing in {shown(line)}")
    return value


def parse_media_playlist(text: str) -> MediaPlaylistView:
    """Read a media playlist; the PRELOAD-HINT's position is the part after the last listed one
    (S 4.4.5.3). Raises :class:`PlaylistSyntaxError` (a ValueError) on a line it cannot read."""
    view = MediaPlaylistView()
    parts, segments = view.parts, view.segments
    msn = index = 0
    hinted = discontinuity = False
    duration, pdt = 0.0, ""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():  # a segment URI closes its segment
                segments.append(ListedSegment(msn, line.strip(), duration, discontinuity, pdt))
                msn, index, discontinuity = msn + 1, 0, False
            continue
        tag, _, value = line.partition(":")
        try:
            if tag == "#EXT-X-PART":  # the most frequent line: its URI without the full list
                uri = _URI.search(value)
                if uri is None:
                    raise PlaylistSyntaxError(f"URI missing in {shown(line)}")
                parts.append((msn, index, uri.group(1)))
                index += 1
            elif tag == "#EXTINF":
                duration = float(value.partition(",")[0])
            elif tag == "#EXT-X-PROGRAM-DATE-TIME":
                pdt = value
            elif tag == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                msn = view.media_sequence = int(value)
            elif tag == "#EXT-X-SKIP":
                view.skipped = int(tag_attributes(line).get("SKIPPED-SEGMENTS", "0"))
                msn += view.skipped
            elif tag == "#EXT-X-SERVER-CONTROL":
                view.can_skip = "CAN-SKIP-UNTIL" in tag_attributes(line)
            elif tag == "#EXT-X-PART-INF":
                view.part_target = float(tag_attributes(line).get("PART-TARGET", "0"))
            elif tag == "#EXT-X-MAP":
                view.map_uri = _required(tag_attributes(line), "URI", line)
            elif tag == "#EXT-X-PRELOAD-HINT":
                a = tag_attributes(line)
                kind, hint_uri = a.get("TYPE", ""), a.get("URI")
                if hint_uri is not None:
                    view.preload_hints.append((kind, hint_uri))
                hinted = hinted or kind == "PART"
            elif tag == "#EXT-X-RENDITION-REPORT":
                a = tag_attributes(line)
                uri_, last_msn = _required(a, "URI", line), int(_required(a, "LAST-MSN", line))
                view.reports.append((uri_, last_msn, int(a.get("LAST-PART", "-1"))))
            elif tag == "#EXT-X-DATERANGE":
                view.dateranges.append(tag_attributes(line).get("ID", ""))
            elif tag == "#EXT-X-ENDLIST":
                view.ended = True
        except PlaylistSyntaxError:
            raise
        except ValueError:  # int()/float() of a malformed number (its message repeats it whole)
            raise PlaylistSyntaxError(f"not a number in {shown(line)}") from None
    if hinted:
        view.hint = (msn, index)
    return view


def parse_variants(text: str) -> list[tuple[str, int]]:
    """(URI, BANDWIDTH) of each EXT-X-STREAM-INF of a multivariant playlist, in order."""
    out: list[tuple[str, int]] = []
    bandwidth: int | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-STREAM-INF:"):
            value = tag_attributes(line).get("BANDWIDTH", "0")
            if not (value.isascii() and value.isdigit()):  # "²" is a digit int() refuses
                raise PlaylistSyntaxError(f"BANDWIDTH is not a number in {shown(line)}")
            bandwidth = int(value)
        elif line and not line.startswith("#") and bandwidth is not None:
            out.append((line.strip(), bandwidth))
            bandwidth = None
    return out
