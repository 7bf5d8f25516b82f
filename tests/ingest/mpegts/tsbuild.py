"""Build MPEG-TS packets, PSI sections and PES packets by hand for exact error-case tests."""

from __future__ import annotations

from ingest.mpegts.psi import crc32_mpeg2


def packet(
    pid: int,
    payload: bytes = b"",
    *,
    start: bool = False,
    cc: int = 0,
    af_flags: int | None = None,
    tei: bool = False,
    scrambled: bool = False,
) -> bytes:
    """One 188-byte packet; an adaptation field (``af_flags``, stuffing) fills what is left."""
    room = 184 - len(payload)
    if room < 0 or (af_flags is not None and room < 2):
        raise ValueError("payload does not fit")
    field = b""
    if room == 1:
        field = b"\x00"
    elif room:
        field = bytes([room - 1, af_flags or 0]) + b"\xff" * (room - 2)
    control = (2 if field else 0) | (1 if payload else 0)
    head = bytes(
        [
            0x47,
            (0x80 if tei else 0) | (0x40 if start else 0) | pid >> 8,
            pid & 0xFF,
            (0x80 if scrambled else 0) | control << 4 | cc & 0x0F,
        ]
    )
    return head + field + payload


def section(table_id: int, extension: int, body: bytes, version: int = 0) -> bytes:
    """A long-form PSI section with its CRC32."""
    length = 5 + len(body) + 4
    head = bytes(
        [
            table_id,
            0xB0 | length >> 8,
            length & 0xFF,
            extension >> 8,
            extension & 0xFF,
            0xC1 | version << 1,
            0,
            0,
        ]
    )
    data = head + body
    return data + crc32_mpeg2(data).to_bytes(4, "big")


def pat(programs: dict[int, int], version: int = 0) -> bytes:
    body = b"".join(
        n.to_bytes(2, "big") + (0xE000 | pid).to_bytes(2, "big") for n, pid in programs.items()
    )
    return section(0x00, 1, body, version)


def pmt(program: int, streams: list[tuple[int, int]], version: int = 0, pcr: int = 0x100) -> bytes:
    body = (0xE000 | pcr).to_bytes(2, "big") + b"\xf0\x00"
    for stream_type, pid in streams:
        body += bytes([stream_type]) + (0xE000 | pid).to_bytes(2, "big") + b"\xf0\x00"
    return section(0x02, program, body, version)


def psi_packet(pid: int, data: bytes, cc: int = 0) -> bytes:
    return packet(pid, b"\x00" + data, start=True, cc=cc)


def timestamp(prefix: int, value: int) -> bytes:
    return bytes(
        [
            prefix << 4 | (value >> 29 & 0x0E) | 1,
            value >> 22 & 0xFF,
            (value >> 14 & 0xFE) | 1,
            value >> 7 & 0xFF,
            (value << 1 & 0xFE) | 1,
        ]
    )


def pes(
    stream_id: int, data: bytes, pts: int, dts: int | None = None, bounded: bool = True
) -> bytes:
    """A PES packet; ``bounded=False`` writes PES_packet_length 0 as video may."""
    if dts is None:
        opt = bytes([0x80, 0x80, 5]) + timestamp(2, pts)
    else:
        opt = bytes([0x80, 0xC0, 10]) + timestamp(3, pts) + timestamp(1, dts)
    length = len(opt) + len(data) if bounded else 0
    return b"\x00\x00\x01" + bytes([stream_id]) + length.to_bytes(2, "big") + opt + data


def packetize(pid: int, data: bytes, cc: int = 0) -> list[bytes]:
    """Split one PES into packets (first with payload_unit_start_indicator)."""
    out = []
    for i in range(0, len(data), 184):
        out.append(packet(pid, data[i : i + 184], start=i == 0, cc=cc))
        cc = (cc + 1) & 0x0F
    return out


def adts(payload: bytes, rate_index: int = 3, channels: int = 2, profile: int = 1) -> bytes:
    """An ADTS frame (no CRC) around a raw AAC payload."""
    n = 7 + len(payload)
    return (
        bytes(
            [
                0xFF,
                0xF1,
                profile << 6 | rate_index << 2 | channels >> 2,
                (channels & 3) << 6 | n >> 11,
                n >> 3 & 0xFF,
                (n & 7) << 5 | 0x1F,
                0xFC,
            ]
        )
        + payload
    )
