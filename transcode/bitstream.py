"""H.264 and AAC byte formats the packager needs: Annex B → AVCC, avcC records, CODECS strings.

libx264 always writes Annex B (start codes), also with ``AV_CODEC_FLAG_GLOBAL_HEADER``: the
global header is then SPS+PPS *with start codes*, not an avcC record. fMP4 wants length-prefixed
NAL units in ``mdat`` and an avcC box (ISO/IEC 14496-15 §5.3.3.1), so we convert here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.h264 import H264Error, parse_avcc
from ingest.rtmp.flv import FLVFormatError, parse_audio_specific_config

NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
_PARAMETER_SETS = frozenset({NAL_SPS, NAL_PPS})


class BitstreamError(ValueError):
    """Malformed H.264/AAC configuration or payload."""


def iter_annexb(data: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes), without start codes."""
    starts: list[tuple[int, int]] = []  # (start code position, payload position)
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        code_at = i - 1 if i > 0 and data[i - 1] == 0 else i
        starts.append((code_at, i + 3))
        i = data.find(b"\x00\x00\x01", i + 3)
    for index, (_, begin) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(data)
        nal = data[begin:end]
        if nal:
            yield nal


def iter_avcc(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    """NAL units of a length-prefixed (AVCC) payload; raises on a length past the end."""
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise BitstreamError("truncated NAL length prefix")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise BitstreamError(f"NAL length {size} runs past the payload end")
        yield data[pos : pos + size]
        pos += size


def annexb_to_avcc(data: bytes, *, drop_parameter_sets: bool = True) -> bytes:
    """An encoder's Annex B access unit as 4-byte length-prefixed NAL units for ``mdat``.

    Access unit delimiters go; SPS/PPS go too unless asked to stay (they live in the avcC).
    """
    out = bytearray()
    for nal in iter_annexb(data):
        nal_type = nal[0] & 0x1F
        if nal_type == NAL_AUD or (drop_parameter_sets and nal_type in _PARAMETER_SETS):
            continue
        out += struct.pack(">I", len(nal))
        out += nal
    return bytes(out)


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """The parts of an avcC record (AVCDecoderConfigurationRecord) we use."""

    profile: int
    compatibility: int
    level: int
    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def codec_string(self) -> str:
        """RFC 6381 ``avc1.PPCCLL``."""
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"

    def to_bytes(self) -> bytes:
        """Serialise as an avcC record (ISO/IEC 14496-15 §5.3.3.1.2)."""
        out = bytearray(
            [1, self.profile, self.compatibility, self.level, 0xFC | (self.length_size - 1)]
        )
        out.append(0xE0 | len(self.sps))
        for sps in self.sps:
            out += struct.pack(">H", len(sps)) + sps
        out.append(len(self.pps))
        for pps in self.pps:
            out += struct.pack(">H", len(pps)) + pps
        if self.profile in (100, 110, 122, 144):
            # High profiles carry chroma format and bit depths: 4:2:0, 8 bit, no SPS ext.
            out += bytes([0xFC | 1, 0xF8, 0xF8, 0])
        return bytes(out)

    @classmethod
    def parse(cls, record: bytes) -> AvcConfig:
        """Read an avcC record (with ingest's parser); no SPS or PPS is an error."""
        try:
            rec = parse_avcc(record)
        except H264Error as exc:
            raise BitstreamError(str(exc)) from exc
        if not rec.sps:
            raise BitstreamError("avcC record has no SPS")
        if not rec.pps:
            raise BitstreamError("avcC record has no PPS")
        return cls(
            rec.profile_idc,
            rec.profile_compatibility,
            rec.level_idc,
            rec.nal_length_size,
            rec.sps,
            rec.pps,
        )

    @classmethod
    def from_annexb(cls, data: bytes) -> AvcConfig:
        """From an encoder's Annex B global header (SPS and PPS with start codes)."""
        sps = tuple(n for n in iter_annexb(data) if n[0] & 0x1F == NAL_SPS)
        pps = tuple(n for n in iter_annexb(data) if n[0] & 0x1F == NAL_PPS)
        if not sps or not pps or len(sps[0]) < 4:
            raise BitstreamError("global header lacks SPS/PPS")
        return cls(sps[0][1], sps[0][2], sps[0][3], 4, sps, pps)


@dataclass(frozen=True, slots=True)
class AacConfig:
    """An AudioSpecificConfig's first fields."""

    object_type: int
    sample_rate: int
    channels: int
    frame_length: int

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"

    @classmethod
    def parse(cls, asc: bytes) -> AacConfig:
        """Read an AudioSpecificConfig (with ingest's parser)."""
        try:
            c = parse_audio_specific_config(asc)
        except FLVFormatError as exc:
            raise BitstreamError(str(exc)) from exc
        return cls(c.object_type, c.sample_rate, c.channels, c.frame_length)

    @property
    def is_lc_passthrough_ready(self) -> bool:
        """AAC-LC at 44.1 or 48 kHz with 1024-sample frames: what HLS players take as is."""
        return (
            self.object_type == 2
            and self.sample_rate in (44100, 48000)
            and self.frame_length == 1024
            and self.channels in (1, 2)
        )
