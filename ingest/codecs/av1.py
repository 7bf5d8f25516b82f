"""AV1 configuration: the av1C record (AV1-ISOBMFF §2.3.3) and the sequence header OBU (AV1 §5.5).

Enough to read an Enhanced RTMP ``av01`` SequenceStart for the decoder and the status page; AV1
is never passed through to viewers (their players need H.264).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.codecs.errors import BitstreamError
from ingest.codecs.h264 import BitReader, H264Error

OBU_SEQUENCE_HEADER = 1
_MAX_CONFIG_OBUS = 1 << 16  # an av1C arrives in one RTMP message; this only bounds the record


class Av1Error(BitstreamError):
    """Malformed or out-of-range AV1 configuration data."""


@dataclass(frozen=True, slots=True)
class Av1SequenceHeader:
    """What the status page takes from a sequence header: profile, level and the maximum size."""

    profile: int
    level: int
    tier: int
    width: int
    height: int


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    """AV1 §4.10.5 leb128 (at most 8 bytes); returns (value, next position)."""
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise Av1Error("leb128 size truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise Av1Error("leb128 size longer than 8 bytes")


def iter_obus(data: bytes) -> list[tuple[int, bytes]]:
    """Split a low-overhead bitstream (§5.2, every OBU with its size field) into (type, payload)."""
    obus: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80:
            raise Av1Error("OBU forbidden bit set")
        if not header & 0x02:
            raise Av1Error("OBU without a size field (not the low-overhead format)")
        pos += 2 if header & 0x04 else 1  # obu_extension_flag: one more header byte
        size, pos = _leb128(data, pos)
        if pos + size > len(data):
            raise Av1Error(f"OBU of {size} bytes runs past the data")
        obus.append((header >> 3 & 0x0F, data[pos : pos + size]))
        pos += size
    return obus


def _uvlc(r: BitReader) -> int:
    zeros = 0
    while not r.flag():
        zeros += 1
        if zeros >= 32:
            return (1 << 32) - 1  # §4.10.3: the value is then 2^32 - 1
    return r.u(zeros) + (1 << zeros) - 1


def parse_sequence_header(payload: bytes) -> Av1SequenceHeader:
    """Read a sequence header OBU's payload (§5.5.1) up to ``max_frame_height_minus_1``."""
    if payload and payload[0] >> 5 > 2:
        raise Av1Error(f"AV1 seq_profile {payload[0] >> 5} is reserved")
    r = BitReader(payload)
    try:
        profile = r.u(3)
        r.u(1)  # still_picture
        if r.flag():  # reduced_still_picture_header
            level, tier = r.u(5), 0
        else:
            decoder_model = False
            delay_length = 0
            if r.flag():  # timing_info_present_flag
                r.u(64)  # num_units_in_display_tick, time_scale
                if r.flag():  # equal_picture_interval
                    _uvlc(r)
                decoder_model = r.flag()
                if decoder_model:
                    delay_length = r.u(5) + 1
                    r.u(32 + 5 + 5)  # num_units_in_decoding_tick, two more lengths
            display_delay = r.flag()
            level = tier = 0
            for i in range(r.u(5) + 1):
                r.u(12)  # operating_point_idc
                op_level = r.u(5)
                op_tier = r.u(1) if op_level > 7 else 0
                if i == 0:
                    level, tier = op_level, op_tier
                if decoder_model and r.flag():
                    r.u(2 * delay_length + 1)  # decoder/encoder_buffer_delay, low_delay_mode
                if display_delay and r.flag():
                    r.u(4)
        width_bits, height_bits = r.u(4) + 1, r.u(4) + 1
        width, height = r.u(width_bits) + 1, r.u(height_bits) + 1
    except H264Error:  # the shared bit reader speaks H.264's error type
        raise Av1Error("AV1 sequence header truncated") from None
    return Av1SequenceHeader(profile, level, tier, width, height)


@dataclass(frozen=True, slots=True)
class Av1Config:
    """AV1CodecConfigurationRecord (av1C); ``sequence`` is parsed from ``config_obus``."""

    profile: int
    level: int
    tier: int
    high_bitdepth: bool
    twelve_bit: bool
    monochrome: bool
    subsampling_x: bool
    subsampling_y: bool
    chroma_sample_position: int
    initial_presentation_delay: int | None  # frames, when present
    config_obus: bytes
    sequence: Av1SequenceHeader = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 <= self.profile <= 7 and 0 <= self.level <= 31 and self.tier in (0, 1)):
            raise Av1Error("av1C profile, level or tier out of range")
        if not 0 <= self.chroma_sample_position <= 3:
            raise Av1Error("av1C chroma_sample_position out of range")
        delay = self.initial_presentation_delay
        if delay is not None and not 1 <= delay <= 16:
            raise Av1Error("av1C initial_presentation_delay is 1 to 16 frames")
        if len(self.config_obus) > _MAX_CONFIG_OBUS:
            raise Av1Error("av1C configOBUs longer than 64 KiB")
        headers = [p for t, p in iter_obus(self.config_obus) if t == OBU_SEQUENCE_HEADER]
        if not headers:
            raise Av1Error("av1C carries no sequence header OBU")
        object.__setattr__(self, "sequence", parse_sequence_header(headers[0]))

    @classmethod
    def parse(cls, record: bytes) -> Av1Config:
        """Read an av1C record (marker 1, version 1); bounded by the record's length."""
        if len(record) < 4 or record[0] != 0x81:
            raise Av1Error("av1C shorter than 4 bytes or not marker 1, version 1")
        b1, b2, b3 = record[1], record[2], record[3]
        return cls(
            profile=b1 >> 5,
            level=b1 & 0x1F,
            tier=b2 >> 7,
            high_bitdepth=bool(b2 & 0x40),
            twelve_bit=bool(b2 & 0x20),
            monochrome=bool(b2 & 0x10),
            subsampling_x=bool(b2 & 0x08),
            subsampling_y=bool(b2 & 0x04),
            chroma_sample_position=b2 & 0x03,
            initial_presentation_delay=(b3 & 0x0F) + 1 if b3 & 0x10 else None,
            config_obus=bytes(record[4:]),
        )

    def to_bytes(self) -> bytes:
        """Serialize as av1C (AV1-ISOBMFF §2.3.3)."""
        b2 = (
            self.tier << 7
            | self.high_bitdepth << 6
            | self.twelve_bit << 5
            | self.monochrome << 4
            | self.subsampling_x << 3
            | self.subsampling_y << 2
            | self.chroma_sample_position
        )
        delay = self.initial_presentation_delay
        b3 = 0 if delay is None else 0x10 | (delay - 1)
        return bytes((0x81, self.profile << 5 | self.level, b2, b3)) + self.config_obus

    @property
    def codec_string(self) -> str:
        """The AV1 codec string's leading fields, ``av01.P.LLT.DD`` (for display)."""
        depth = 12 if self.twelve_bit else 10 if self.high_bitdepth else 8
        return f"av01.{self.profile}.{self.level:02d}{'H' if self.tier else 'M'}.{depth:02d}"
