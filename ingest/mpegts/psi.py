"""Program-specific information (ISO/IEC 13818-1 §2.4.4): section CRC, PAT and PMT."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.mpegts.errors import MPEGTSError

#: §2.4.4.10: private and PSI sections are at most 1024 bytes (section_length ≤ 1021).
MAX_SECTION = 1024
TABLE_PAT = 0x00
TABLE_PMT = 0x02


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = (crc << 1 ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """Annex B CRC-32 (polynomial 0x04C11DB7, MSB first, initial 0xFFFFFFFF, no final XOR)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc << 8 & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


class SectionError(MPEGTSError):
    """A malformed PSI section (dropped and counted, not fatal)."""


@dataclass(frozen=True, slots=True)
class Section:
    """A long-form section's header fields and the body between header and CRC."""

    table_id: int
    table_id_extension: int  # transport_stream_id (PAT) or program_number (PMT)
    version: int
    current: bool
    body: bytes


def parse_section(data: bytes) -> Section:
    """Check syntax, length and CRC of a complete long-form section (§2.4.4.3)."""
    if len(data) < 12:
        raise SectionError(f"section of {len(data)} bytes is shorter than 12")
    if not data[1] & 0x80:
        raise SectionError(f"table 0x{data[0]:02x} without section_syntax_indicator")
    length = (data[1] & 0x0F) << 8 | data[2]
    if length + 3 != len(data):
        raise SectionError(f"section_length {length} does not match {len(data) - 3} bytes")
    if crc32_mpeg2(data) != 0:
        raise SectionError(f"table 0x{data[0]:02x} fails its CRC32")
    return Section(
        data[0], data[3] << 8 | data[4], data[5] >> 1 & 0x1F, bool(data[5] & 1), data[8:-4]
    )


def parse_pat(body: bytes) -> dict[int, int]:
    """program_number → PMT PID (§2.4.4.3); program 0 (the network PID) is left out."""
    if len(body) % 4:
        raise SectionError(f"PAT body of {len(body)} bytes is not a list of 4-byte entries")
    programs = {}
    for i in range(0, len(body), 4):
        number = body[i] << 8 | body[i + 1]
        if number:
            programs[number] = (body[i + 2] & 0x1F) << 8 | body[i + 3]
    return programs


def parse_pmt(body: bytes) -> list[tuple[int, int]]:
    """(stream_type, elementary PID) of each PMT entry, in order (§2.4.4.8)."""
    if len(body) < 4:
        raise SectionError("PMT truncated before program_info_length")
    pos = 4 + ((body[2] & 0x0F) << 8 | body[3])
    entries = []
    while pos < len(body):
        if pos + 5 > len(body):
            raise SectionError("PMT entry truncated")
        stream_type = body[pos]
        pid = (body[pos + 1] & 0x1F) << 8 | body[pos + 2]
        pos += 5 + ((body[pos + 3] & 0x0F) << 8 | body[pos + 4])
        if pos > len(body):
            raise SectionError("PMT ES_info runs past the section")
        entries.append((stream_type, pid))
    return entries
