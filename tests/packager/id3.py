"""A small ID3v2.4 reader for tests (only what shopcast writes: TXXX frames)."""

from __future__ import annotations

import struct


def synchsafe(b: bytes) -> int:
    assert all(x < 0x80 for x in b), "not synchsafe"
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def read_txxx(tag: bytes) -> dict[str, str]:
    assert tag[:3] == b"ID3" and tag[3] == 4 and tag[4] == 0, "not ID3v2.4"
    size = synchsafe(tag[6:10])
    assert len(tag) == 10 + size
    frames, pos = {}, 10
    while pos < len(tag):
        fid, fsize = tag[pos : pos + 4].decode(), synchsafe(tag[pos + 4 : pos + 8])
        body = tag[pos + 10 : pos + 10 + fsize]
        assert fid == "TXXX" and body[0] == 3  # UTF-8
        desc, _, value = body[1:].partition(b"\x00")
        frames[desc.decode()] = value.decode()
        pos += 10 + fsize
    return frames


def parse_emsg(payload: bytes) -> dict:
    """An emsg box payload (after the 8-byte box header)."""
    version = payload[0]
    assert version == 1
    timescale, pt, duration, event_id = struct.unpack_from(">IQII", payload, 4)
    rest = payload[24:]
    scheme, _, rest = rest.partition(b"\x00")
    value, _, data = rest.partition(b"\x00")
    return {
        "timescale": timescale,
        "presentation_time": pt,
        "duration": duration,
        "id": event_id,
        "scheme": scheme.decode(),
        "value": value.decode(),
        "data": data,
    }
