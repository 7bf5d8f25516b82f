"""fMP4/CMAF writer (ISO/IEC 14496-12, ISO/IEC 23000-19), sans-I/O: samples in, bytes out.

Init segments: ``ftyp`` + ``moov`` with zero-sample tracks and ``mvex``/``trex`` (LLHLS_RULES
"fMP4 / CMAF"). Fragments: optional ``emsg`` boxes, then one ``moof`` + ``mdat`` CMAF chunk with
a ``traf`` per track (``tfhd`` default-base-is-moof, ``tfdt``, ``trun``).

:func:`fragment_py` and :func:`part_fragment_py` are the pure-Python references;
``native/fmp4_writer.pyx`` holds their compiled twins (same bytes, same exceptions; both pass
``tests/packager/test_fmp4_twin.py``). :func:`fragment` and :func:`part_fragment` are the twins
unless they are not built or ``SHOPCAST_NO_EXTENSIONS`` is set; :data:`NATIVE` says which.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)

#: ``trun`` flags (§8.8.8): data offset, then per sample duration, size, flags, composition offset.
TRUN_DATA_OFFSET = 0x000001
TRUN_SAMPLE_DURATION = 0x000100
TRUN_SAMPLE_SIZE = 0x000200
TRUN_SAMPLE_FLAGS = 0x000400
TRUN_SAMPLE_CTO = 0x000800
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000

#: Sample flags (§8.8.3.1): a sync sample depends on nothing; others depend and are non-sync.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000

#: AOM "ID3 Timed Metadata in CMAF": emsg scheme for ID3 tags.
ID3_SCHEME = "https://aomedia.org/emsg/ID3"


def box(kind: bytes, *payload: bytes) -> bytes:
    """An ISO BMFF box: 32-bit size, four-character type, payload."""
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with version (8 bits) and flags (24 bits)."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def iter_boxes(
    data: bytes | bytearray, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in ``data[start:end]``, 64-bit sizes included.

    Bounded by ``end``: a size that is too small or runs past it raises ``ValueError``.
    """
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # §4.2: a 64-bit largesize follows the type
            if end - pos < 16:
                raise ValueError(f"truncated box header at byte {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # §4.2: the box runs to the end of the file
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} at byte {pos} has a bad size {size}")
        yield kind, pos + header, pos + size
        pos += size


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One track of an init segment: ``codec_config`` is avcC or an AudioSpecificConfig."""

    track_id: int
    kind: str  # "video" or "audio"
    timescale: int
    codec_config: bytes
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a fragment; ``cto`` is pts - dts (may be negative with B-frames)."""

    duration: int
    data: bytes
    keyframe: bool
    cto: int = 0


@dataclass(frozen=True, slots=True)
class TrackRun:
    """The samples of one track inside one fragment, starting at ``base_dts``."""

    track_id: int
    base_dts: int
    samples: Sequence[Sample] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Emsg:
    """A version-1 ``emsg`` (ISO/IEC 23009-1 §5.10.3.3) with an absolute presentation time."""

    timescale: int
    presentation_time: int
    event_id: int
    message_data: bytes
    scheme_id_uri: str = ID3_SCHEME
    value: str = ""
    event_duration: int = 0xFFFFFFFF  # unknown (AOM ID3-in-CMAF)

    def to_bytes(self) -> bytes:
        return full_box(
            b"emsg",
            1,
            0,
            struct.pack(
                ">IQII",
                self.timescale,
                self.presentation_time,
                self.event_duration,
                self.event_id,
            ),
            self.scheme_id_uri.encode() + b"\0",
            self.value.encode() + b"\0",
            self.message_data,
        )


def _ftyp() -> bytes:
    # iso6 for tfdt v1 and negative composition offsets, cmfc for CMAF, aid3 for ID3 emsg (AOM).
    return box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41aid3")


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100),
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", next_track_id),
    )


def _tkhd(t: TrackInfo) -> bytes:
    volume = 0x0100 if t.kind == "audio" else 0
    return full_box(
        b"tkhd",
        0,
        0x000003,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, t.track_id, 0, 0),
        bytes(8),
        struct.pack(">hhhH", 0, 0, volume, 0),
        _MATRIX,
        struct.pack(">II", t.width << 16, t.height << 16),
    )


def _mdia(t: TrackInfo) -> bytes:
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, t.timescale, 0, 0x55C4, 0))
    if t.kind == "video":
        hdlr_type, name, media_header = (
            b"vide",
            b"shopcast video\0",
            full_box(b"vmhd", 0, 1, bytes(8)),
        )
    else:
        hdlr_type, name, media_header = (
            b"soun",
            b"shopcast audio\0",
            full_box(b"smhd", 0, 0, bytes(4)),
        )
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, hdlr_type), bytes(12), name)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(t)),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    return box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl))


def _sample_entry(t: TrackInfo) -> bytes:
    if t.kind == "video":
        return box(
            b"avc1",
            bytes(6),
            struct.pack(">H", 1),  # data_reference_index
            bytes(16),
            struct.pack(">HHIIIH", t.width, t.height, 0x00480000, 0x00480000, 0, 1),
            bytes(32),  # compressorname
            struct.pack(">Hh", 0x0018, -1),
            box(b"avcC", t.codec_config),
        )
    return box(
        b"mp4a",
        bytes(6),
        struct.pack(">H", 1),
        bytes(8),
        struct.pack(">HHHHI", t.channels or 2, 16, 0, 0, (t.sample_rate & 0xFFFF) << 16),
        _esds(t.codec_config),
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    # ISO/IEC 14496-1 §8.3.3: size in 7-bit groups; always 4 bytes, as most muxers write it.
    n = len(payload)
    size = bytes(((n >> s) & 0x7F) | (0x80 if s else 0) for s in (21, 14, 7, 0))
    return bytes((tag,)) + size + payload


def _esds(asc: bytes) -> bytes:
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BB", 0x40, 0x15)  # MPEG-4 Audio; AudioStream (5 << 2 | upstream 0 | 1)
        + bytes(3)  # bufferSizeDB
        + struct.pack(">II", 0, 0)
        + _descriptor(0x05, asc),
    )
    es = _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def init_segment(tracks: Sequence[TrackInfo]) -> bytes:
    """``ftyp`` + ``moov`` for ``tracks`` (zero samples, durations 0, ``mvex``/``trex``)."""
    traks = [box(b"trak", _tkhd(t), _mdia(t)) for t in tracks]
    trexs = [full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks]
    next_id = max((t.track_id for t in tracks), default=0) + 1
    return _ftyp() + box(b"moov", _mvhd(next_id), *traks, box(b"mvex", *trexs))


def _trun(run: TrackRun, data_offset: int) -> bytes:
    flags = (
        TRUN_DATA_OFFSET
        | TRUN_SAMPLE_DURATION
        | TRUN_SAMPLE_SIZE
        | TRUN_SAMPLE_FLAGS
        | TRUN_SAMPLE_CTO
    )
    pack = struct.Struct(">IIIi").pack
    table = b"".join(
        pack(
            s.duration,
            len(s.data),
            SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS,
            s.cto,
        )
        for s in run.samples
    )
    # version 1: signed composition offsets (B-frames before their reference).
    return full_box(b"trun", 1, flags, struct.pack(">Ii", len(run.samples), data_offset), table)


def fragment_py(
    sequence_number: int, runs: Sequence[TrackRun], emsgs: Sequence[Emsg] = ()
) -> bytes:
    """One CMAF chunk: ``emsg`` boxes, then ``moof`` + ``mdat`` holding every run's samples."""
    runs = [r for r in runs if r.samples]
    if not runs:
        raise ValueError("a fragment needs at least one sample")
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))

    def trafs(offsets: Sequence[int]) -> list[bytes]:
        return [
            box(
                b"traf",
                full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", r.track_id)),
                full_box(b"tfdt", 1, 0, struct.pack(">Q", r.base_dts)),
                _trun(r, off),
            )
            for r, off in zip(runs, offsets, strict=True)
        ]

    # The moof's size does not depend on the offsets' values, so build it once to measure.
    moof_size = len(box(b"moof", mfhd, *trafs([0] * len(runs))))
    offsets, pos = [], moof_size + 8  # first sample byte: after moof and the mdat header
    for r in runs:
        offsets.append(pos)
        pos += sum(len(s.data) for s in r.samples)
    moof = box(b"moof", mfhd, *trafs(offsets))
    mdat = box(b"mdat", *(s.data for r in runs for s in r.samples))
    return b"".join(e.to_bytes() for e in emsgs) + moof + mdat


class Packet(Protocol):
    """What :func:`part_fragment` reads of a packet (``transcode.output.EncodedPacket``)."""

    @property
    def pts(self) -> int: ...
    @property
    def dts(self) -> int: ...
    @property
    def duration(self) -> int: ...
    @property
    def keyframe(self) -> bool: ...
    @property
    def payload(self) -> bytes: ...


def part_fragment_py(
    sequence_number: int,
    lead_track_id: int,
    lead_offset: int,
    lead: Sequence[Packet],
    end_dts: int,
    audio_track_id: int,
    audio_offset: int,
    audio: Sequence[Packet],
    emsgs: Sequence[Emsg] = (),
) -> bytes:
    """One part's CMAF chunk straight from its packets: each lead sample lasts until the next
    one's ``dts`` (the last until ``end_dts``; at least one tick), audio samples keep their
    durations and are all sync samples; each ``tfdt`` is its track's first ``dts`` plus offset."""
    runs = []
    if lead:
        ends = [*(p.dts for p in lead[1:]), end_dts]
        samples = [
            Sample(max(nxt - p.dts, 1), p.payload, p.keyframe, p.pts - p.dts)
            for p, nxt in zip(lead, ends, strict=True)
        ]
        runs.append(TrackRun(lead_track_id, lead[0].dts + lead_offset, samples))
    if audio:
        sync = [Sample(a.duration, a.payload, True) for a in audio]
        runs.append(TrackRun(audio_track_id, audio[0].dts + audio_offset, sync))
    return fragment_py(sequence_number, runs, emsgs)


def fragment_timing(data: bytes, track_id: int) -> tuple[int, int] | None:
    """(first ``tfdt``, summed sample durations) of ``track_id`` over every ``moof`` in a
    segment, in the track's timescale; ``None`` when the bytes hold no such run or are damaged
    (a box size that does not fit)."""
    try:
        return _fragment_timing(data, track_id)
    except ValueError:
        return None


def _fragment_timing(data: bytes, track_id: int) -> tuple[int, int] | None:
    first: int | None = None
    total = 0
    for kind, start, end in iter_boxes(data):
        if kind != b"moof":
            continue
        for tkind, tstart, tend in iter_boxes(data, start, end):
            if tkind != b"traf":
                continue
            found, base, durations = False, None, 0
            for ckind, cstart, cend in iter_boxes(data, tstart, tend):
                if ckind == b"tfhd" and cend - cstart >= 8:
                    found = struct.unpack_from(">I", data, cstart + 4)[0] == track_id
                elif ckind == b"tfdt" and cend - cstart >= 8:
                    v1 = data[cstart] == 1 and cend - cstart >= 12
                    base = struct.unpack_from(">Q" if v1 else ">I", data, cstart + 4)[0]
                elif ckind == b"trun" and cend - cstart >= 8:
                    flags = struct.unpack_from(">I", data, cstart)[0] & 0xFFFFFF
                    count = struct.unpack_from(">I", data, cstart + 4)[0]
                    if not flags & TRUN_SAMPLE_DURATION:
                        return None  # the writer always lists durations
                    pos = cstart + 8 + 4 * bool(flags & TRUN_DATA_OFFSET) + 4 * bool(flags & 0x4)
                    step = 4 * sum(
                        bool(flags & f)
                        for f in (
                            TRUN_SAMPLE_DURATION,
                            TRUN_SAMPLE_SIZE,
                            TRUN_SAMPLE_FLAGS,
                            TRUN_SAMPLE_CTO,
                        )
                    )
                    if pos + count * step > cend:
                        return None
                    durations += sum(
                        struct.unpack_from(">I", data, pos + i * step)[0] for i in range(count)
                    )
            if found and base is not None:
                first = base if first is None else first
                total += durations
    return None if first is None else (first, total)


fragment = fragment_py
part_fragment = part_fragment_py
NATIVE = False
if not os.environ.get("SHOPCAST_NO_EXTENSIONS"):
    try:
        from native.fmp4_writer import fragment as _native_fragment
        from native.fmp4_writer import part_fragment as _native_part_fragment
    except ImportError:
        pass
    else:
        fragment = _native_fragment
        part_fragment = _native_part_fragment
        NATIVE = True
