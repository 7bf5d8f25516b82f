"""Timed metadata: product tags as EXT-X-DATERANGE (S 4.4.5.1) and ID3-in-emsg (AOM ID3 in CMAF)."""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from packager.playlist import DateRangeLine, format_pdt

#: DATERANGE CLASS per tag kind; never "com.apple.hls.interstitial" (LLHLS_RULES).
TAG_CLASSES = {
    "product": "com.shopcast.product",
    "deal": "com.shopcast.deal",
    "poll": "com.shopcast.poll",
}
#: CLASS of the show's own range (``show_daterange``); it carries no client attribute.
SHOW_CLASS = "com.shopcast.show"
ID3_DESCRIPTION = "com.shopcast.tag"
#: PLANNED-DURATION of an END-ON-NEXT range (seconds): a pin lasts until the next one, at
#: most the show, and a show is shorter than a day.
PIN_PLANNED_DURATION = 86_400.0
#: Larger payloads stay out of the playlists (every viewer reloads them 3× a second); the
#: emsg ID3 in the media and ``GET /api/v1/streams/{id}/tags`` carry them whole.
MAX_INLINE_PAYLOAD = 512


@dataclass(frozen=True)
class Tag:
    """A tag placed on the stream: ``time`` is seconds on the packaged timeline."""

    id: str
    kind: str
    time: Fraction
    program_date_time: float
    payload: dict[str, Any]
    duration: float | None = None  # seconds; None for product pins (END-ON-NEXT)
    product_id: str | None = None
    added_at: float = 0.0  # wall clock when it entered the playlists

    @property
    def klass(self) -> str:
        return TAG_CLASSES[self.kind]

    @property
    def end_on_next(self) -> bool:
        # A pinned product stays until the next pin, so a late joiner sees the current one; a
        # poll without a duration likewise until the next poll (an open range is never pruned).
        return self.kind in ("product", "poll") and self.duration is None

    def payload_json(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    @functools.cached_property
    def daterange(self) -> str:
        """The EXT-X-DATERANGE line, the same on every rendition (rendered once)."""
        attrs = [
            f'ID="{_quoted(self.id)}"',
            f'CLASS="{self.klass}"',
            f'START-DATE="{format_pdt(self.program_date_time)}"',
        ]
        if self.end_on_next:
            attrs.append("END-ON-NEXT=YES")  # S 4.4.5.1: needs CLASS, excludes DURATION/END-DATE
            # Shaka Player (4.x, hls_parser processDateRangeTags_) holds back an END-ON-NEXT
            # range until the next one of its CLASS is listed, so the current pin never reached
            # it; it takes PLANNED-DURATION as the end when there is no DURATION/END-DATE. S
            # 4.4.5.1 (LLHLS_RULES "DATERANGE") excludes only DURATION and END-DATE from an
            # END-ON-NEXT range: PLANNED-DURATION, "the expected duration", is allowed, and
            # hls.js and AVPlayer still end the range on the next one.
            attrs.append(f"PLANNED-DURATION={PIN_PLANNED_DURATION:.3f}")
        elif self.duration is not None:
            attrs.append(f"DURATION={self.duration:.3f}")
        if self.product_id is not None:
            attrs.append(f'X-COM-SHOPCAST-PRODUCT="{_quoted(self.product_id)}"')
        attrs.append(f'X-COM-SHOPCAST-KIND="{self.kind}"')
        data = self.payload_json().encode()
        if len(data) <= MAX_INLINE_PAYLOAD:
            # A quoted-string cannot hold '"' or line breaks, so the payload travels as a
            # hexadecimal-sequence (S 4.4.5.1.1 allows either for client attributes).
            attrs.append(f"X-COM-SHOPCAST-DATA=0x{data.hex().upper()}")
        return "#EXT-X-DATERANGE:" + ",".join(attrs)

    def id3(self) -> bytes:
        """An ID3v2.4 tag with one TXXX frame carrying the tag as JSON (UTF-8)."""
        body = {
            "id": self.id,
            "kind": self.kind,
            "product_id": self.product_id,
            "data": self.payload,
        }
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        return id3_txxx(ID3_DESCRIPTION, text)

    def end(self) -> float | None:
        """Wall-clock end, when the tag itself says (DURATION); None for END-ON-NEXT."""
        return None if self.duration is None else self.program_date_time + self.duration


def show_daterange(start: float) -> DateRangeLine:
    """The show's own EXT-X-DATERANGE: open (no end), no client attribute, listed from the
    show's first playlist on.

    Why: hls.js (>= 1.7) makes its metadata TextTrack a ``<track src="data:,WEBVTT">`` on the
    first playlist that has a range, and Chromium empties a track's cues when that load starts
    (a task later); cues hls.js added in the same call are lost, and it only re-adds them if
    the track is still empty at the next playlist update (an emsg cue landing first keeps them
    lost). With this range the track is made, with no cue, before the first tag. S 4.4.5.1
    (LLHLS_RULES "DATERANGE") allows a range with only ID, CLASS and START-DATE; an open range
    covers every later segment, so it stays listed for the whole show.
    """
    range_id = f"show-{round(start * 1000)}"  # a show starts once: never reused
    attrs = f'ID="{range_id}",CLASS="{SHOW_CLASS}",START-DATE="{format_pdt(start)}"'
    return DateRangeLine(range_id, "#EXT-X-DATERANGE:" + attrs, start)


def _quoted(value: str) -> str:
    if any(c in value for c in '"\r\n'):
        raise ValueError("quoted-string values cannot contain '\"', CR or LF")
    return value


def _synchsafe(n: int) -> bytes:
    """ID3v2 28-bit synchsafe integer (7 bits per byte)."""
    if n >= 1 << 28:
        raise ValueError("ID3 size over 256 MB")
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def id3_txxx(description: str, value: str) -> bytes:
    """ID3v2.4 (id3.org v2.4.0-structure §3.1, -frames §4.2.6): header + one TXXX frame."""
    frame_body = b"\x03" + description.encode() + b"\x00" + value.encode()  # 3 = UTF-8
    # v2.4 frame sizes are synchsafe, unlike v2.3.
    frame = b"TXXX" + _synchsafe(len(frame_body)) + b"\x00\x00" + frame_body
    return b"ID3\x04\x00\x00" + _synchsafe(len(frame)) + frame


@dataclass
class TagTimeline:
    """The stream's tags in time order, rendered identically into every media playlist."""

    tags: list[Tag] = field(default_factory=list)
    removed: list[tuple[str, float]] = field(default_factory=list)  # (id, wall time removed)

    def add(self, tag: Tag) -> None:
        bisect.insort(self.tags, tag, key=lambda t: t.time)

    def prune(self, oldest_listed: float, now: float, remember: float) -> None:
        """S 4.4.5.1: drop a range only once no date in it maps to a listed segment.

        One pass from the newest tag back: an END-ON-NEXT range ends where the next range of
        its CLASS starts.
        """
        self.removed = [(i, t) for i, t in self.removed if t >= now - remember]
        next_start: dict[str, float] = {}
        keep: list[Tag] = []
        dropped: list[str] = []
        for tag in reversed(self.tags):
            end = next_start.get(tag.klass) if tag.end_on_next else tag.end()
            next_start[tag.klass] = tag.program_date_time
            if end is not None and end < oldest_listed:
                dropped.append(tag.id)
            else:
                keep.append(tag)
        self.tags = keep[::-1]
        self.removed += [(tag_id, now) for tag_id in reversed(dropped)]
