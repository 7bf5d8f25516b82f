"""Minimal ISO BMFF reader for assertions on what the packager wrote."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from packager import fmp4

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"dinf"}


def iter_boxes(
    data: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of each box (the packager's walker, payloads sliced out for assertions)."""
    for kind, payload, box_end in fmp4.iter_boxes(data, start, end):
        yield kind, data[payload:box_end]


def find(data: bytes, path: list[bytes]) -> list[bytes]:
    """Payloads of every box at ``path`` (e.g. [b"moof", b"traf", b"tfdt"])."""
    found = []
    for kind, payload in iter_boxes(data):
        if kind == path[0]:
            if len(path) == 1:
                found.append(payload)
            else:
                found += find(payload, path[1:])
    return found


@dataclass
class TrafInfo:
    track_id: int
    base_dts: int
    durations: list[int]
    sizes: list[int]
    flags: list[int]
    ctos: list[int]
    data_offset: int


def trafs(fragment: bytes) -> list[TrafInfo]:
    out = []
    for traf in find(fragment, [b"moof", b"traf"]):
        tfhd = find(traf, [b"tfhd"])[0]
        (track_id,) = struct.unpack_from(">I", tfhd, 4)
        tfdt = find(traf, [b"tfdt"])[0]
        assert tfdt[0] == 1
        (base,) = struct.unpack_from(">Q", tfdt, 4)
        trun = find(traf, [b"trun"])[0]
        count, offset = struct.unpack_from(">Ii", trun, 4)
        rows = [struct.unpack_from(">IIIi", trun, 12 + 16 * i) for i in range(count)]
        out.append(
            TrafInfo(
                track_id,
                base,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                offset,
            )
        )
    return out
