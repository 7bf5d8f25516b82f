"""Clips of a recording: a rendition's fMP4 segments in, a progressive MP4 out, no re-encoding.

A stream copy can only start on an IDR, so a clip starts at the IDR at or before the requested
start (and says so); it ends at the requested end. PyAV copies the samples into an MP4 with
``movflags=faststart`` (``moov`` first: a browser plays it while it downloads), then the clip's
tags go in as ``emsg`` ID3 boxes between ``moov`` and ``mdat``. Blocking: run it in a worker
thread.
"""

from __future__ import annotations

import bisect
import io
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from packager.fmp4 import Emsg, fragment_timing, iter_boxes
from packager.posters import FMP4_INPUT

#: Float seconds from manifests and program date-times: a frame this close counts as "at".
_EPSILON = 0.001

#: Boxes on the path from ``moov`` to the chunk offset tables (ISO/IEC 14496-12 §8.7.5).
_TO_CHUNK_OFFSETS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


class ClipError(ValueError):
    """The segments given cannot make the clip asked for; the message says why."""


@dataclass(frozen=True, slots=True)
class RecordedSegment:
    """One recorded segment and where it starts on the recording's timeline (seconds)."""

    start: float
    duration: float
    data: bytes
    discontinuity: bool = False


@dataclass(frozen=True, slots=True)
class ClipTag:
    """A tag to carry: its frame's time on the recording's timeline and its ID3 payload."""

    id: str
    time: float
    id3: bytes


@dataclass(frozen=True, slots=True)
class Clip:
    """A cut clip; ``start``/``end`` are where it really starts and ends on the recording."""

    data: bytes
    start: float
    end: float
    tag_ids: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


def covering(segments: Sequence[tuple[float, float]], start: float, end: float) -> range:
    """Indexes of the (start, duration) segments a clip of [start, end) needs.

    From the segment holding ``start`` (it begins with an IDR at or before it: segments are cut
    at IDRs) through the one holding the last instant before ``end``; empty when none does.
    """
    starts = [s for s, _ in segments]
    first = max(bisect.bisect_right(starts, start) - 1, 0)
    last = bisect.bisect_left(starts, end) - 1
    if not segments or last < first or segments[last][0] + segments[last][1] <= start:
        return range(0)
    return range(first, last + 1)


def cut_clip(
    init: bytes,
    segments: Sequence[RecordedSegment],
    start: float,
    end: float,
    tags: Sequence[ClipTag] = (),
) -> Clip:
    """The clip of [start, end) (recording seconds) from ``init`` and the segments covering it."""
    if end <= start:
        raise ClipError("end must be after start")
    if not segments:
        raise ClipError("no recorded segment covers the range")
    data = init + b"".join(s.data for s in segments)
    bounds, pos = [], len(init)
    for seg in segments:
        bounds.append(pos)
        pos += len(seg.data)
    with av.open(io.BytesIO(data), "r", format="mp4", options=FMP4_INPUT) as src:
        video = next((s for s in src.streams if s.type == "video"), None)
        if video is None:
            raise ClipError("the rendition has no video track")
        audio = next((s for s in src.streams if s.type == "audio"), None)
        # Media time minus recording time, per segment: constant except across a
        # discontinuity (a reconnect moves the media timeline on).
        shifts: list[Fraction] = []
        for seg in segments:
            if not shifts or seg.discontinuity:
                timing = fragment_timing(seg.data, video.id)
                if timing is None:
                    raise ClipError("a segment holds no video fragment")
                base = timing[0] * (video.time_base or 1)
                shifts.append(base - Fraction(seg.start))
            else:
                shifts.append(shifts[-1])
        cut = _Cut(src, video, audio, bounds, shifts)
        clip_start, clip_end, packets = cut.pick(start, end)
        with tempfile.TemporaryDirectory(prefix="shopcast-clip-") as tmp:
            # faststart rewrites the file through its name, so not in memory.
            path = Path(tmp) / "clip.mp4"
            timescale = _mux(path, src, packets)
            mp4 = path.read_bytes()
    first = float(clip_start)
    carried = sorted(
        (t for t in tags if first - _EPSILON <= t.time < clip_end), key=lambda t: t.time
    )
    emsgs = b"".join(
        Emsg(timescale, max(round((t.time - first) * timescale), 0), n, t.id3).to_bytes()
        for n, t in enumerate(carried, 1)
    )
    return Clip(
        data=insert_after_moov(mp4, emsgs) if emsgs else mp4,
        start=first,
        end=clip_end,
        tag_ids=tuple(t.id for t in carried),
    )


class _Cut:
    """The demuxed packets of the covering segments, each with its segment's time shift."""

    def __init__(
        self, src: Any, video: Any, audio: Any, bounds: list[int], shifts: list[Fraction]
    ) -> None:
        self.video, self.audio, self.shifts = video, audio, shifts
        self._float_shifts = [float(s) for s in shifts]
        self.videos: list[tuple[Any, int]] = []  # (packet, segment index)
        self.audios: list[tuple[Any, int]] = []
        self._ticks: dict[tuple[int, int], int] = {}
        for packet in src.demux(*[s for s in (video, audio) if s is not None]):
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            index = min(max(bisect.bisect_right(bounds, packet.pos) - 1, 0), len(shifts) - 1)
            (self.videos if packet.stream is video else self.audios).append((packet, index))

    def seconds(self, ticks: int, stream: Any, index: int) -> float:
        """Recording seconds of a timestamp of a packet from segment ``index``."""
        return ticks * float(stream.time_base) - self._float_shifts[index]

    def pick(self, start: float, end: float) -> tuple[Fraction, float, list[tuple[Any, int]]]:
        """(real start, real end, [(packet, ticks to subtract)]) of the clip of [start, end)."""
        video, key = self.video, None
        for i, (packet, index) in enumerate(self.videos):
            if self.seconds(packet.pts, video, index) > start + _EPSILON:
                break
            if packet.is_keyframe:
                key = i
        if key is None:
            raise ClipError("no keyframe at or before the start in the segments given")
        key_packet, key_index = self.videos[key]
        clip_start = key_packet.pts * video.time_base - self.shifts[key_index]
        first = float(clip_start)
        kept: list[tuple[Any, int]] = []
        clip_end = first
        for packet, index in self.videos[key:]:
            if self.seconds(packet.dts, video, index) >= end - _EPSILON:
                break
            kept.append((packet, self._zero(video, index, clip_start)))
            clip_end = max(clip_end, self.seconds(packet.pts + packet.duration, video, index))
        for packet, index in self.audios:
            at = self.seconds(packet.pts, self.audio, index)
            if first - _EPSILON <= at < clip_end - _EPSILON:
                kept.append((packet, self._zero(self.audio, index, clip_start)))
        return clip_start, min(clip_end, max(end, first)), kept

    def _zero(self, stream: Any, index: int, clip_start: Fraction) -> int:
        """The stream's timestamp of the clip's first instant, for packets of segment ``index``."""
        key = (stream.index, index)
        if key not in self._ticks:
            self._ticks[key] = round((self.shifts[index] + clip_start) / stream.time_base)
        return self._ticks[key]


def _mux(path: Path, src: Any, packets: list[tuple[Any, int]]) -> int:
    """Stream-copy ``packets`` into a faststart MP4 at ``path``; the video track's timescale."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        copies = {s.index: out.add_stream_from_template(s) for s in src.streams}
        video_out = next(c for c in copies.values() if c.type == "video")
        packets.sort(key=lambda item: (item[0].dts - item[1]) * float(item[0].time_base))
        last: dict[int, int] = {}
        for packet, zero in packets:
            index = packet.stream.index
            if packet.dts - zero <= last.get(index, -(1 << 62)):
                # Across a reconnect the new session's first audio (AAC priming) can land on
                # the old session's last frame: a track's decode times must rise (§8.6.1.2).
                continue
            last[index] = packet.dts - zero
            packet.pts -= zero
            packet.dts -= zero
            packet.stream = copies[index]
            out.mux(packet)
        # The muxer picks the track timescale when it writes the header (first mux).
        timescale = int(video_out.time_base.denominator)
    return timescale


def insert_after_moov(mp4: bytes, boxes: bytes) -> bytes:
    """``boxes`` put at file level right after ``moov`` (which must precede ``mdat``).

    Why this is valid: ISO/IEC 23009-1 §5.10.3.3.1 gives ``emsg`` no container (a file-level
    box), and ISO/IEC 14496-12 asks at file level only that ``ftyp`` come first (§6.2.3 box
    order) and that readers skip boxes they do not know (§4.2). Chunk offsets count from the
    start of the file (§8.7.5), so every ``stco``/``co64`` entry moves by ``len(boxes)``.
    """
    top = {kind: (payload, end) for kind, payload, end in iter_boxes(mp4)}
    if b"moov" not in top or b"mdat" not in top or top[b"moov"][1] > top[b"mdat"][0]:
        raise ClipError("the MP4 does not have moov before mdat")
    out = bytearray(mp4)
    payload, moov_end = top[b"moov"]
    _shift_chunk_offsets(out, payload, moov_end, len(boxes))
    return bytes(out[:moov_end]) + boxes + bytes(out[moov_end:])


def _shift_chunk_offsets(mp4: bytearray, start: int, end: int, delta: int) -> None:
    for kind, payload, box_end in iter_boxes(mp4, start, end):
        if kind in _TO_CHUNK_OFFSETS:
            _shift_chunk_offsets(mp4, payload, box_end, delta)
        elif kind in (b"stco", b"co64"):
            width = 4 if kind == b"stco" else 8
            fmt = ">I" if width == 4 else ">Q"
            (count,) = struct.unpack_from(">I", mp4, payload + 4)
            if payload + 8 + count * width > box_end:
                raise ClipError(f"{kind.decode()} holds fewer entries than it says")
            for at in range(payload + 8, payload + 8 + count * width, width):
                (offset,) = struct.unpack_from(fmt, mp4, at)
                if offset + delta >= 1 << (8 * width):
                    raise ClipError("the clip is too large for 32-bit chunk offsets")
                struct.pack_into(fmt, mp4, at, offset + delta)
