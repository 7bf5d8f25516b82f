"""VP9 configuration: the vpcC record (VP Codec ISO Media File Format Binding §2.3.3) and the
keyframe's uncompressed header (VP9 bitstream spec §6.2), for frame size and colour format.

Enough to read an Enhanced RTMP ``vp09`` SequenceStart for the decoder and the status page; VP9
is never passed through to viewers (their players need H.264).
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.codecs.errors import BitstreamError
from ingest.codecs.h264 import BitReader, H264Error

#: vpcC is a FullBox payload: version 1, flags 0, then 8 bytes and the (empty) init data size.
VPCC_SIZE = 12
_SYNC_CODE = 0x498342
_CS_RGB = 7


class Vp9Error(BitstreamError):
    """Malformed or out-of-range VP9 configuration data."""


@dataclass(frozen=True, slots=True)
class Vp9FrameHeader:
    """A VP9 keyframe's uncompressed header, up to its frame size."""

    profile: int
    bit_depth: int
    subsampling_x: bool
    subsampling_y: bool
    full_range: bool
    width: int
    height: int

    @property
    def chroma_subsampling(self) -> int:
        """vpcC's chromaSubsampling: 0/1 = 4:2:0 (vertical/colocated), 2 = 4:2:2, 3 = 4:4:4."""
        if self.subsampling_x and self.subsampling_y:
            return 1  # colocated with luma (0,0): what libvpx writes
        if self.subsampling_y:
            raise Vp9Error("VP9 4:4:0 has no vpcC chromaSubsampling value")
        return 2 if self.subsampling_x else 3


def parse_keyframe_header(frame: bytes) -> Vp9FrameHeader:
    """Read a keyframe's uncompressed header (§6.2); ``Vp9Error`` for anything else."""
    r = BitReader(frame[:16])  # the header up to frame_size fits in 10 bytes
    try:
        if r.u(2) != 2:
            raise Vp9Error("not a VP9 frame (frame_marker is not 2)")
        profile = r.u(1) | r.u(1) << 1
        if profile == 3 and r.u(1):
            raise Vp9Error("VP9 profile 3 reserved bit set")
        if r.u(1):
            raise Vp9Error("VP9 frame shows an existing frame, not a keyframe")
        if r.u(1) != 0:
            raise Vp9Error("VP9 frame is not a keyframe")
        r.u(2)  # show_frame, error_resilient_mode
        if r.u(24) != _SYNC_CODE:
            raise Vp9Error("VP9 keyframe sync code missing")
        bit_depth = (12 if r.u(1) else 10) if profile >= 2 else 8
        color_space = r.u(3)
        if color_space != _CS_RGB:
            full_range = bool(r.u(1))
            sub_x = sub_y = True
            if profile in (1, 3):
                sub_x, sub_y = bool(r.u(1)), bool(r.u(1))
                if r.u(1):
                    raise Vp9Error("VP9 colour config reserved bit set")
        else:
            full_range, sub_x, sub_y = True, False, False
            if profile in (1, 3) and r.u(1):
                raise Vp9Error("VP9 colour config reserved bit set")
        width, height = r.u(16) + 1, r.u(16) + 1
    except H264Error:  # the shared bit reader speaks H.264's error type
        raise Vp9Error("VP9 keyframe header truncated") from None
    return Vp9FrameHeader(profile, bit_depth, sub_x, sub_y, full_range, width, height)


@dataclass(frozen=True, slots=True)
class Vp9Config:
    """VPCodecConfigurationRecord (vpcC, version 1) as Enhanced RTMP's ``vp09`` sends it."""

    profile: int
    level: int
    bit_depth: int
    chroma_subsampling: int
    full_range: bool
    colour_primaries: int = 2  # 2: unspecified (ISO/IEC 23091-2)
    transfer_characteristics: int = 2
    matrix_coefficients: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 3:
            raise Vp9Error(f"vpcC profile {self.profile} out of range (0 to 3)")
        if self.bit_depth not in (8, 10, 12):
            raise Vp9Error(f"vpcC bit depth {self.bit_depth} is not 8, 10 or 12")
        if not 0 <= self.chroma_subsampling <= 3:
            raise Vp9Error(f"vpcC chromaSubsampling {self.chroma_subsampling} is reserved")

    @classmethod
    def parse(cls, record: bytes) -> Vp9Config:
        """Read a vpcC record (version 1, flags 0, empty codec initialization data)."""
        if len(record) < VPCC_SIZE:
            raise Vp9Error(f"vpcC shorter than {VPCC_SIZE} bytes")
        if record[0] != 1:
            raise Vp9Error(f"vpcC version {record[0]} (only version 1 is known)")
        if int.from_bytes(record[10:12], "big") != 0:
            raise Vp9Error("vpcC codecInitializationData must be empty for VP9")
        b6 = record[6]
        return cls(
            profile=record[4],
            level=record[5],
            bit_depth=b6 >> 4,
            chroma_subsampling=b6 >> 1 & 7,
            full_range=bool(b6 & 1),
            colour_primaries=record[7],
            transfer_characteristics=record[8],
            matrix_coefficients=record[9],
        )

    @classmethod
    def from_keyframe(cls, frame: bytes, level: int = 0) -> Vp9Config:
        """The record for a stream starting with this keyframe (level 0: undefined)."""
        header = parse_keyframe_header(frame)
        return cls(
            header.profile, level, header.bit_depth, header.chroma_subsampling, header.full_range
        )

    def to_bytes(self) -> bytes:
        """Serialize as vpcC (version 1, flags 0, no codec initialization data)."""
        packed = self.bit_depth << 4 | self.chroma_subsampling << 1 | self.full_range
        fields = (self.profile, self.level, packed, self.colour_primaries)
        colour = (self.transfer_characteristics, self.matrix_coefficients)
        return b"\x01\x00\x00\x00" + bytes(fields + colour) + b"\x00\x00"

    @property
    def codec_string(self) -> str:
        """The VP9 codec string's leading fields, ``vp09.PP.LL.DD`` (for display)."""
        return f"vp09.{self.profile:02d}.{self.level:02d}.{self.bit_depth:02d}"
