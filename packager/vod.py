"""A recording's manifest and its VOD playlists, pure: no I/O, no clocks.

The manifest (``<recording_id>/manifest.json``) is what the recorder wrote as the show went; the
playlists are rendered from it and the stream's tags, the same DATERANGE lines as live
(``Tag.daterange``). Section numbers ("S 4.4.3.5") refer to the HLS draft, "A x.y" to Apple's
authoring spec.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from packager.playlist import Variant, format_pdt, render_multivariant_playlist, segment_uri
from packager.tags import Tag

MANIFEST_VERSION = 1


@dataclass
class SegmentRecord:
    """One recorded segment: ``start`` on the packaged timeline, ``program_date_time`` epoch s."""

    msn: int
    duration: float
    program_date_time: float
    discontinuity: bool
    bytes: int
    start: float
    #: Its init when not ``init.mp4`` (a slate with its own codec configuration).
    map: str | None = None


@dataclass
class RenditionRecord:
    """One recorded rendition: what its ``EXT-X-STREAM-INF`` says, and its segments."""

    name: str
    codecs: str
    bandwidth: int  # nominal (configured rate + overhead); the measured peak is computed
    width: int
    height: int
    frame_rate: float | None
    timescale: int
    track_id: int  # the lead track (video, or audio for an audio-only stream)
    segments: list[SegmentRecord] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def byte_count(self) -> int:
        return sum(s.bytes for s in self.segments)


@dataclass
class Manifest:
    """What a recording holds; rewritten as it grows, rebuilt from the segments after a crash."""

    id: str
    stream_id: str
    started_at: float
    target_duration: int
    renditions: list[RenditionRecord] = field(default_factory=list)  # highest bitrate first
    ended_at: float | None = None

    def rendition(self, name: str) -> RenditionRecord | None:
        return next((r for r in self.renditions if r.name == name), None)

    @property
    def duration(self) -> float:
        return max((r.duration for r in self.renditions), default=0.0)

    @property
    def byte_count(self) -> int:
        return sum(r.byte_count for r in self.renditions)

    @property
    def time_range(self) -> tuple[float, float] | None:
        """(first, end) program date-time of what was recorded on any rendition."""
        segs = [s for r in self.renditions for s in r.segments]
        if not segs:
            return None
        return (
            min(s.program_date_time for s in segs),
            max(s.program_date_time + s.duration for s in segs),
        )

    def to_json(self) -> bytes:
        body = {"version": MANIFEST_VERSION, **asdict(self)}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; ``ValueError`` when it is not one this code wrote."""
        try:
            raw = json.loads(data)
            if raw.get("version") != MANIFEST_VERSION:
                raise ValueError(f"manifest version {raw.get('version')!r}")
            renditions = [
                RenditionRecord(
                    **{k: v for k, v in r.items() if k != "segments"},
                    segments=[SegmentRecord(**s) for s in r["segments"]],
                )
                for r in raw["renditions"]
            ]
            return cls(
                id=str(raw["id"]),
                stream_id=str(raw["stream_id"]),
                started_at=float(raw["started_at"]),
                target_duration=int(raw["target_duration"]),
                renditions=renditions,
                ended_at=None if raw.get("ended_at") is None else float(raw["ended_at"]),
            )
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a recording manifest: {exc}") from exc


def tags_in(tags: Iterable[Tag], time_range: tuple[float, float] | None) -> list[Tag]:
    """The tags whose start lies within the recorded time range (any source, any post time)."""
    if time_range is None:
        return []
    first, end = time_range
    return sorted(
        (t for t in tags if first <= t.program_date_time < end), key=lambda t: t.program_date_time
    )


def render_vod_media_playlist(
    manifest: Manifest, rendition: RenditionRecord, tags: Sequence[Tag], *, ended: bool
) -> str:
    """The rendition's playlist: ``VOD`` + ENDLIST once ended, ``EVENT`` while recording."""
    segs = rendition.segments
    # S 4.4.3.1: every EXTINF rounded must fit the target duration, which never changes.
    target = max([manifest.target_duration] + [round(s.duration) for s in segs])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",  # S 8: EXT-X-MAP without I-FRAMES-ONLY needs version 6
        f"#EXT-X-TARGETDURATION:{target}",
        # S 4.4.3.5: EVENT while segments are only appended, VOD once it will never change.
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if ended else 'EVENT'}",
        f"#EXT-X-MEDIA-SEQUENCE:{segs[0].msn if segs else 0}",
        "#EXT-X-INDEPENDENT-SEGMENTS",  # every segment starts with an IDR (LLHLS_RULES)
        f'#EXT-X-MAP:URI="{(segs[0].map if segs else None) or "init.mp4"}"',
    ]
    # S 4.4.5.1: the same ranges, same IDs and START-DATEs as the live playlists had.
    lines.extend(t.daterange for t in tags)
    current_map = segs[0].map if segs else None
    for i, seg in enumerate(segs):
        if seg.discontinuity and i > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.map != current_map:  # S 4.4.4.5: applies until the next EXT-X-MAP
            current_map = seg.map
            lines.append(f'#EXT-X-MAP:URI="{current_map or "init.mp4"}"')
        # A 8.4 / S 4.4.4.6: PROGRAM-DATE-TIME on every segment, as live.
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(seg.program_date_time)}")
        lines.append(f"#EXTINF:{seg.duration:.5f},")
        lines.append(segment_uri(seg.msn))
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def variant(rendition: RenditionRecord) -> Variant:
    """``EXT-X-STREAM-INF`` of a recorded rendition: BANDWIDTH the measured peak segment bitrate
    (S 4.4.6.2), AVERAGE-BANDWIDTH the whole recording's, nominal rates before anything is in."""
    peak = max((s.bytes * 8 / s.duration for s in rendition.segments if s.duration > 0), default=0)
    duration = rendition.duration
    average = rendition.byte_count * 8 / duration if duration > 0 else 0
    bandwidth = math.ceil(max(peak, rendition.bandwidth if not peak else 0))
    return Variant(
        uri=f"{rendition.name}/index.m3u8",
        bandwidth=bandwidth,
        average_bandwidth=math.ceil(average) or bandwidth,
        codecs=rendition.codecs,
        width=rendition.width,
        height=rendition.height,
        frame_rate=Fraction(rendition.frame_rate).limit_denominator(1001)
        if rendition.frame_rate
        else None,
    )


def render_vod_multivariant_playlist(manifest: Manifest) -> str:
    return render_multivariant_playlist([variant(r) for r in manifest.renditions])


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """The renditions as the API shows them."""
    return {
        "renditions": [
            {
                "name": r.name,
                "codecs": r.codecs,
                "width": r.width,
                "height": r.height,
                "segments": len(r.segments),
                "duration": round(r.duration, 3),
                "bytes": r.byte_count,
            }
            for r in manifest.renditions
        ]
    }
