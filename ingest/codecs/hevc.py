"""HEVC configuration: the SPS head (H.265 §7.3.2.2), the hvcC record (14496-15 §8.3.3.1).

Enough to build an hvcC from in-band VPS/SPS/PPS (MPEG-TS, Annex B) for the decoder and the
status page; HEVC is never passed through to viewers, so no sample-entry details beyond that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.codecs.annexb import avcc_from_nals, iter_annexb
from ingest.codecs.errors import BitstreamError
from ingest.codecs.h264 import BitReader, H264Error, unescape_rbsp

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
#: §7.4.2.2 Table 7-1: BLA, IDR and CRA pictures (16..21) plus the reserved IRAP types 22, 23.
IRAP_TYPES = range(16, 24)
_PARAMETER_SETS = frozenset({NAL_VPS, NAL_SPS, NAL_PPS})
_MAX_LUMA_SAMPLES = 1 << 28  # far above level 6.2 (35 651 584), still bounded


class HevcError(BitstreamError):
    """Malformed or out-of-range HEVC configuration data."""


def nal_type(nal: bytes) -> int:
    """``nal_unit_type`` from the two-byte NAL unit header (§7.3.1.2)."""
    return nal[0] >> 1 & 0x3F


@dataclass(frozen=True, slots=True)
class HevcSPS:
    """What an hvcC and the status page take from a sequence parameter set."""

    profile_tier_level: bytes  # the 12 general_* bytes, as hvcC stores them
    max_sub_layers: int
    temporal_id_nesting: bool
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


def parse_hevc_sps(nal: bytes) -> HevcSPS:
    """Parse an SPS NAL unit (with its two-byte header) up to the bit depths."""
    if len(nal) < 16 or nal_type(nal) != NAL_SPS:
        raise HevcError("not an HEVC SPS, or shorter than 16 bytes")
    rbsp = unescape_rbsp(nal[2:])
    r = BitReader(rbsp)
    try:
        r.u(4)  # sps_video_parameter_set_id
        sub_layers = r.u(3) + 1
        nesting = r.flag()
        general = rbsp[1:13]
        r.u(96)
        # profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3
        present = [(r.flag(), r.flag()) for _ in range(sub_layers - 1)]
        if sub_layers > 1:
            r.u(2 * (9 - sub_layers))  # reserved_zero_2bits up to 8 entries
        for profile, level in present:
            r.u(88 if profile else 0)
            r.u(8 if level else 0)
        r.ue(15)  # sps_seq_parameter_set_id
        chroma = r.ue(3)
        if chroma == 3:
            r.u(1)  # separate_colour_plane_flag
        width, height = r.ue(1 << 16), r.ue(1 << 16)
        if r.flag():  # conformance_window_flag, offsets in chroma units (§7.4.3.2.1)
            sub_w = 2 if chroma in (1, 2) else 1
            sub_h = 2 if chroma == 1 else 1
            left, right, top, bottom = (r.ue(1 << 16) for _ in range(4))
            width -= sub_w * (left + right)
            height -= sub_h * (top + bottom)
        depth_luma, depth_chroma = 8 + r.ue(8), 8 + r.ue(8)
    except H264Error as exc:  # the shared bit reader speaks H.264's error type
        raise HevcError(str(exc)) from None
    if width <= 0 or height <= 0 or width * height > _MAX_LUMA_SAMPLES:
        raise HevcError(f"HEVC picture of {width}x{height} is empty or too large")
    return HevcSPS(
        bytes(general), sub_layers, nesting, chroma, depth_luma, depth_chroma, width, height
    )


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """HEVCDecoderConfigurationRecord (hvcC) built from parameter sets; ``sps_info`` parsed."""

    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    sps_info: HevcSPS = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.vps and self.sps and self.pps):
            raise HevcError("an hvcC record needs a VPS, an SPS and a PPS")
        if any(not 0 < len(nal) <= 0xFFFF for nal in self.vps + self.sps + self.pps):
            raise HevcError("hvcC parameter sets are 1 to 65535 bytes long")
        if max(len(self.vps), len(self.sps), len(self.pps)) > 64:
            raise HevcError("more than 64 parameter sets of one kind")
        object.__setattr__(self, "sps_info", parse_hevc_sps(self.sps[0]))

    @classmethod
    def from_annexb(cls, data: bytes) -> HevcConfig:
        """From the VPS/SPS/PPS NAL units of an Annex B access unit or global header."""
        nals = list(iter_annexb(data))
        return cls(
            *(tuple(n for n in nals if nal_type(n) == t) for t in (NAL_VPS, NAL_SPS, NAL_PPS))
        )

    @classmethod
    def parse(cls, record: bytes) -> HevcConfig:
        """Read an hvcC record's VPS/SPS/PPS arrays (other NAL types are skipped); bounded."""
        if len(record) < 23 or record[0] != 1:
            raise HevcError("hvcC shorter than 23 bytes or not configurationVersion 1")
        sets: dict[int, list[bytes]] = {NAL_VPS: [], NAL_SPS: [], NAL_PPS: []}
        pos = 23
        for _ in range(record[22]):
            if pos + 3 > len(record):
                raise HevcError("hvcC array header truncated")
            kind, count = record[pos] & 0x3F, int.from_bytes(record[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                if pos + 2 > len(record):
                    raise HevcError("hvcC NAL unit length truncated")
                size = int.from_bytes(record[pos : pos + 2], "big")
                if pos + 2 + size > len(record):
                    raise HevcError(f"hvcC NAL unit of {size} bytes runs past the record")
                if kind in sets:
                    sets[kind].append(bytes(record[pos + 2 : pos + 2 + size]))
                pos += 2 + size
        return cls(tuple(sets[NAL_VPS]), tuple(sets[NAL_SPS]), tuple(sets[NAL_PPS]))

    @property
    def codec_string(self) -> str:
        """A short RFC 6381-style ``hvc1.<profile>.L<level>`` (for display, not for HLS)."""
        ptl = self.sps_info.profile_tier_level
        return f"hvc1.{ptl[0] & 0x1F}.{'H' if ptl[0] & 0x20 else 'L'}{ptl[11]}"

    def to_bytes(self) -> bytes:
        """Serialize as hvcC with 4-byte NAL lengths (ISO/IEC 14496-15 §8.3.3.1.1)."""
        info = self.sps_info
        out = bytearray([1]) + info.profile_tier_level
        out += b"\xf0\x00"  # reserved, min_spatial_segmentation_idc = 0 (unknown)
        out += b"\xfc"  # reserved, parallelismType = 0 (unknown)
        out += bytes([0xFC | info.chroma_format_idc])
        out += bytes([0xF8 | (info.bit_depth_luma - 8), 0xF8 | (info.bit_depth_chroma - 8)])
        out += b"\x00\x00"  # avgFrameRate unknown
        out.append(info.max_sub_layers << 3 | info.temporal_id_nesting << 2 | 3)
        out.append(3)  # numOfArrays
        for kind, nals in ((NAL_VPS, self.vps), (NAL_SPS, self.sps), (NAL_PPS, self.pps)):
            out.append(0x80 | kind)  # array_completeness: every set is in the record
            out += len(nals).to_bytes(2, "big")
            for nal in nals:
                out += len(nal).to_bytes(2, "big") + nal
        return bytes(out)


def annexb_to_hevc_sample(nals: Sequence[bytes]) -> bytes:
    """An access unit's NAL units as a 4-byte length-prefixed sample, without parameter sets
    and access unit delimiters (those live in the hvcC)."""
    return avcc_from_nals(
        n for n in nals if nal_type(n) not in _PARAMETER_SETS and nal_type(n) != NAL_AUD
    )
