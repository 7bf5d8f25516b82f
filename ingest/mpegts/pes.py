"""PES packet headers (ISO/IEC 13818-1 §2.4.3.6): stream id, PTS, DTS, where the payload starts."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.mpegts.errors import MPEGTSError

#: Table 2-22: streams whose PES packets have no optional header (padding, private_stream_2 …).
_NO_HEADER_STREAMS = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})


class PESError(MPEGTSError):
    """A malformed PES header (that PES packet is dropped, not fatal)."""


@dataclass(frozen=True, slots=True)
class PESHeader:
    stream_id: int
    packet_length: int  # PES_packet_length: bytes after this field, 0 = unbounded (video)
    pts: int | None  # raw 33-bit values
    dts: int | None
    payload_offset: int


def _timestamp(b: bytes) -> int:
    # §2.4.3.7: 33 bits split 3 + 15 + 15 around marker bits.
    if not (b[0] & 1 and b[2] & 1 and b[4] & 1):
        raise PESError("PTS/DTS marker bits missing")
    return (b[0] >> 1 & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def parse_pes_header(data: bytes) -> PESHeader:
    """Parse the fixed and optional header of a PES packet that starts at ``data[0]``."""
    if len(data) < 6:
        raise PESError(f"PES header truncated at {len(data)} bytes")
    if data[:3] != b"\x00\x00\x01":
        raise PESError(f"PES start code expected, found {data[:3].hex()}")
    stream_id = data[3]
    length = data[4] << 8 | data[5]
    if stream_id in _NO_HEADER_STREAMS:
        return PESHeader(stream_id, length, None, None, 6)
    if len(data) < 9:
        raise PESError("PES optional header truncated")
    if data[6] & 0xC0 != 0x80:
        raise PESError("PES optional header lacks its '10' marker")
    flags = data[7] >> 6
    offset = 9 + data[8]
    if offset > len(data):
        raise PESError(f"PES header_data_length {data[8]} runs past the data")
    pts = dts = None
    if flags == 1:
        raise PESError("PTS_DTS_flags '01' is forbidden")
    if flags & 2:
        if data[8] < 5:
            raise PESError("PES header too short for its PTS")
        pts = _timestamp(data[9:14])
    if flags == 3:
        if data[8] < 10:
            raise PESError("PES header too short for its DTS")
        dts = _timestamp(data[14:19])
    return PESHeader(stream_id, length, pts, dts, offset)
