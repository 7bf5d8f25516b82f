"""H.264 configuration: the SPS (H.264 §7.3.2.1) and the avcC record (ISO/IEC 14496-15 §5.3.3.1).

``AvcConfig`` parses and serializes avcC; its optional trailer (chroma format and bit depths) is
written from what the SPS says, for the profiles 14496-15 lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from ingest.codecs.annexb import avcc_from_nals, iter_annexb
from ingest.codecs.errors import BitstreamError

# §7.3.2.1.1: profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# ISO/IEC 14496-15 §5.3.3.1.2: profiles whose avcC carries chromaFormat, bitDepthLumaMinus8,
# bitDepthChromaMinus8 and the SPS extensions (144, High 4:4:4, was withdrawn from H.264)
_AVCC_TRAILER_PROFILES = frozenset({100, 110, 122, 244})
_MAX_MBS = 1 << 16  # ~ 1 Gpixel: far above level 6.2 (139264 MBs per frame), still bounded
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
_PARAMETER_SETS = frozenset({NAL_SPS, NAL_PPS})


class H264Error(BitstreamError):
    """Malformed or out-of-range H.264 configuration data."""


def unescape_rbsp(nal: bytes) -> bytes:
    """Drop emulation-prevention bytes (``00 00 03`` → ``00 00``, §7.4.1)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes (§9.1)."""

    __slots__ = ("_nbits", "_pos", "_value")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._nbits = len(data) * 8
        self._pos = 0

    def u(self, n: int) -> int:
        if self._pos + n > self._nbits:
            raise H264Error("SPS truncated")
        self._pos += n
        return (self._value >> (self._nbits - self._pos)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self, limit: int = 0xFFFFFFFE) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("Exp-Golomb code longer than 32 bits")
        value = (1 << zeros) - 1 + self.u(zeros)
        if value > limit:
            raise H264Error(f"Exp-Golomb value {value} exceeds {limit}")
        return value

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclass(frozen=True, slots=True)
class SPS:
    """The fields of a sequence parameter set that a packager and status page need."""

    profile_idc: int
    constraint_flags: int  # constraint_set0..5 flags + reserved bits, as the second SPS byte
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    frame_mbs_only: bool
    sar: tuple[int, int] | None
    fps: Fraction | None  # from VUI timing: time_scale / (2 * num_units_in_tick)

    @property
    def codec_string(self) -> str:
        """RFC 6381 codec string, e.g. ``avc1.64001f``."""
        return f"avc1.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


# Table E-1: sample aspect ratios by aspect_ratio_idc
_SAR = (
    None, (1, 1), (12, 11), (10, 11), (16, 11), (40, 33), (24, 11), (20, 11), (32, 11),
    (80, 33), (18, 11), (15, 11), (64, 33), (160, 99), (4, 3), (3, 2), (2, 1),
)  # fmt: skip


def _skip_scaling_list(r: BitReader, size: int) -> None:
    # §7.3.2.1.1.1
    last = next_ = 8
    for _ in range(size):
        if next_ != 0:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise H264Error(f"delta_scale {delta} outside -128..127")
            next_ = (last + delta + 256) % 256
        last = next_ if next_ != 0 else last


def parse_sps(nal: bytes) -> SPS:
    """Parse an SPS NAL unit (with its one-byte NAL header)."""
    if len(nal) < 4:
        raise H264Error("SPS shorter than 4 bytes")
    if nal[0] & 0x80 or nal[0] & 0x1F != NAL_SPS:
        raise H264Error(f"NAL header 0x{nal[0]:02x} is not an SPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    r.ue(31)  # seq_parameter_set_id
    chroma_format_idc, separate_planes, depth_luma, depth_chroma = 1, False, 8, 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue(3)
        if chroma_format_idc == 3:
            separate_planes = r.flag()
        depth_luma = 8 + r.ue(6)
        depth_chroma = 8 + r.ue(6)
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue(12)  # log2_max_frame_num_minus4
    poc_type = r.ue(2)
    if poc_type == 0:
        r.ue(12)  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue(255)):
            r.se()  # offset_for_ref_frame[i]
    r.ue(32)  # max_num_ref_frames (≤ MaxDpbFrames ≤ 16; allow slack)
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue(_MAX_MBS) + 1
    height_map_units = r.ue(_MAX_MBS) + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if width_mbs * height_map_units * (2 - frame_mbs_only) > _MAX_MBS:
        raise H264Error(f"frame of {width}x{height} is larger than supported")
    if r.flag():  # frame_cropping_flag; §7.4.2.1.1 crop units
        chroma_array_type = 0 if separate_planes else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        left, right, top, bottom = (r.ue(_MAX_MBS * 16) for _ in range(4))
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise H264Error("frame cropping leaves no picture")
    sar = None
    fps = None
    if r.flag():  # vui_parameters_present_flag, Annex E.1.1
        if r.flag():  # aspect_ratio_info_present_flag
            idc = r.u(8)
            if idc == 255:  # Extended_SAR
                sar = (r.u(16), r.u(16))
            elif idc < len(_SAR):
                sar = _SAR[idc]
        if r.flag():  # overscan_info_present_flag
            r.u(1)
        if r.flag():  # video_signal_type_present_flag
            r.u(4)  # video_format, video_full_range_flag
            if r.flag():  # colour_description_present_flag
                r.u(24)
        if r.flag():  # chroma_loc_info_present_flag
            r.ue(5)
            r.ue(5)
        if r.flag():  # timing_info_present_flag
            units, scale = r.u(32), r.u(32)
            if units and scale:
                fps = Fraction(scale, 2 * units)
    return SPS(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=depth_luma,
        bit_depth_chroma=depth_chroma,
        width=width,
        height=height,
        frame_mbs_only=frame_mbs_only,
        sar=sar,
        fps=fps,
    )


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """AVCDecoderConfigurationRecord (avcC); ``sps_info`` is its first SPS, parsed."""

    profile_idc: int
    profile_compatibility: int
    level_idc: int
    length_size: int  # bytes of each NAL unit's length prefix: 1, 2 or 4
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    sps_info: SPS | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.length_size not in (1, 2, 4):
            raise H264Error(f"avcC NAL length size {self.length_size} is not 1, 2 or 4")
        if len(self.sps) > 31 or len(self.pps) > 255:
            raise H264Error(
                f"avcC holds at most 31 SPS and 255 PPS, not {len(self.sps)}/{len(self.pps)}"
            )
        if any(not 0 < len(nal) <= 0xFFFF for nal in self.sps + self.pps):
            raise H264Error("avcC parameter sets are 1 to 65535 bytes long")
        object.__setattr__(self, "sps_info", parse_sps(self.sps[0]) if self.sps else None)

    @property
    def codec_string(self) -> str:
        """RFC 6381 ``avc1.PPCCLL`` from the record's own profile/compatibility/level bytes."""
        return f"avc1.{self.profile_idc:02x}{self.profile_compatibility:02x}{self.level_idc:02x}"

    def to_bytes(self) -> bytes:
        """Serialize as an avcC record (ISO/IEC 14496-15 §5.3.3.1.1)."""
        out = bytearray([1, self.profile_idc, self.profile_compatibility, self.level_idc])
        out += bytes([0xFC | (self.length_size - 1), 0xE0 | len(self.sps)])
        for nal in self.sps:
            out += len(nal).to_bytes(2, "big") + nal
        out.append(len(self.pps))
        for nal in self.pps:
            out += len(nal).to_bytes(2, "big") + nal
        info = self.sps_info
        if self.profile_idc in _AVCC_TRAILER_PROFILES and info is not None:
            # What the SPS says (4:2:2, 10 bit …), and no SequenceParameterSetExt NAL units.
            out += bytes(
                [
                    0xFC | info.chroma_format_idc,
                    0xF8 | (info.bit_depth_luma - 8),
                    0xF8 | (info.bit_depth_chroma - 8),
                    0,
                ]
            )
        return bytes(out)

    @classmethod
    def parse(cls, record: bytes) -> AvcConfig:
        """A record a decoder can use: ``parse_avcc``, and at least one SPS and one PPS."""
        config = parse_avcc(record)
        if not config.sps:
            raise H264Error("avcC record has no SPS")
        if not config.pps:
            raise H264Error("avcC record has no PPS")
        return config

    @classmethod
    def from_parameter_sets(
        cls, sps: Sequence[bytes], pps: Sequence[bytes], length_size: int = 4
    ) -> AvcConfig:
        """A record for SPS/PPS NAL units; profile, compatibility and level from the first SPS."""
        if not sps or not pps:
            raise H264Error("an avcC record needs an SPS and a PPS")
        first = parse_sps(sps[0])
        return cls(
            first.profile_idc,
            first.constraint_flags,
            first.level_idc,
            length_size,
            tuple(sps),
            tuple(pps),
        )

    @classmethod
    def from_annexb(cls, data: bytes) -> AvcConfig:
        """From an encoder's Annex B global header (SPS and PPS with start codes)."""
        nals = list(iter_annexb(data))
        sps = [n for n in nals if n[0] & 0x1F == NAL_SPS]
        pps = [n for n in nals if n[0] & 0x1F == NAL_PPS]
        if not sps or not pps:
            raise H264Error("global header lacks SPS/PPS")
        return cls.from_parameter_sets(sps, pps)


def parse_avcc(data: bytes) -> AvcConfig:
    """Parse an avcC record as received (it may lack SPS or PPS); the trailer is not kept."""
    if len(data) < 7:
        raise H264Error(f"avcC of {len(data)} bytes is shorter than 7")
    if data[0] != 1:
        raise H264Error(f"avcC configurationVersion {data[0]} is not 1")
    length_size = (data[4] & 0x03) + 1
    if length_size == 3:
        raise H264Error("avcC NAL length size 3 is not allowed")
    pos = 5
    lists: list[tuple[bytes, ...]] = []
    for what, count_mask in (("SPS", 0x1F), ("PPS", 0xFF)):
        if pos >= len(data):
            raise H264Error(f"avcC truncated before its {what} count")
        count = data[pos] & count_mask
        pos += 1
        items = []
        for _ in range(count):
            if pos + 2 > len(data):
                raise H264Error(f"avcC truncated in a {what} length")
            n = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
            if n == 0 or pos + n > len(data):
                raise H264Error(f"avcC {what} of {n} bytes is empty or truncated")
            items.append(bytes(data[pos : pos + n]))
            pos += n
        lists.append(tuple(items))
    return AvcConfig(data[1], data[2], data[3], length_size, lists[0], lists[1])


def annexb_to_avcc(data: bytes, *, drop_parameter_sets: bool = True) -> bytes:
    """An encoder's Annex B access unit as 4-byte length-prefixed NAL units for ``mdat``.

    Access unit delimiters go; SPS/PPS go too unless asked to stay (they live in the avcC).
    """
    return avcc_from_nals(
        nal
        for nal in iter_annexb(data)
        if not (
            nal[0] & 0x1F == NAL_AUD or (drop_parameter_sets and nal[0] & 0x1F in _PARAMETER_SETS)
        )
    )
