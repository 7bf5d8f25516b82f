"""FLV audio/video tag bodies (RTMP message types 8 and 9) → :class:`ingest.media.MediaUnit`.

Legacy FLV (Adobe FLV spec v10.1 §E.4.2/§E.4.3) and Enhanced RTMP (veovera enhanced-rtmp v1/v2:
ExVideoTagHeader/ExAudioTagHeader with FourCC, ModEx and one-track Multitrack).
"""

from __future__ import annotations

from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from ingest.rtmp.errors import RTMPProtocolError

# FLV §E.4.3.1 VideoTagHeader
VIDEO_KEYFRAME = 1
VIDEO_COMMAND_FRAME = 5  # "video info/command frame": no picture
CODEC_AVC = 7
AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE = 0, 1, 2
# enhanced-rtmp v2 "Enhanced Video": VideoPacketType
PT_SEQUENCE_START = 0
PT_CODED_FRAMES = 1
PT_SEQUENCE_END = 2
PT_CODED_FRAMES_X = 3
PT_METADATA = 4
PT_MPEG2TS_SEQUENCE_START = 5
PT_VIDEO_MULTITRACK = 6
PT_MODEX = 7
# enhanced-rtmp v2 "Enhanced Audio": AudioPacketType
APT_MULTICHANNEL_CONFIG = 4
APT_MULTITRACK = 5
# FLV §E.4.2.1 AudioTagHeader
SOUND_MP3 = 2
SOUND_EX_HEADER = 9  # enhanced-rtmp v2: SoundFormat 9 means an ExAudioTagHeader follows
SOUND_AAC = 10
SOUND_MP3_8K = 14
AAC_SEQUENCE_HEADER, AAC_RAW = 0, 1

VIDEO_FOURCC = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}
_FOURCC_WITH_CTS = frozenset({b"avc1", b"hvc1"})  # CodedFrames carry an SI24 composition time
AUDIO_FOURCC = {b"mp4a": "aac", b"Opus": "opus", b".mp3": "mp3"}
_LEGACY_VIDEO_NAMES = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha",
    6: "Screen video v2",
    12: "HEVC with non-standard codec id 12 (send Enhanced RTMP 'hvc1')",
    13: "AV1 with non-standard codec id 13 (send Enhanced RTMP 'av01')",
}
_LEGACY_AUDIO_NAMES = {
    0: "Linear PCM (platform endian)",
    1: "ADPCM",
    3: "Linear PCM (little endian)",
    4: "Nellymoser 16 kHz",
    5: "Nellymoser 8 kHz",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    11: "Speex",
    15: "device-specific sound",
}


class UnsupportedMediaError(RTMPProtocolError):
    """The publisher sends a codec we cannot carry; the message names it."""


class FLVFormatError(RTMPProtocolError, ValueError):
    """A malformed audio/video tag body."""


class TimestampUnwrapper:
    """Extends 32-bit RTMP millisecond timestamps (§5.3.1.3, they wrap) into a 64-bit clock.

    Steps of less than 2^31 ms forward (across the wrap) or backward (jitter) are followed.
    """

    __slots__ = ("_last", "_value")

    def __init__(self) -> None:
        self._last: int | None = None
        self._value = 0

    def unwrap(self, raw: int) -> int:
        raw &= 0xFFFFFFFF
        if self._last is None:
            self._value = raw
        else:
            step = (raw - self._last) & 0xFFFFFFFF
            self._value += step - (1 << 32) if step >= 1 << 31 else step
        self._last = raw
        return self._value


def _unit(
    kind: MediaKind,
    codec: str,
    dts: int,
    cts: int,
    keyframe: bool,
    payload: bytes,
    arrival: float,
    is_config: bool = False,
) -> MediaUnit:
    return MediaUnit(
        kind, codec, dts + cts, dts, MILLISECONDS, keyframe, payload, arrival, is_config
    )


def _si24(b: bytes) -> int:
    v = int.from_bytes(b, "big")
    return v - (1 << 24) if v & 0x800000 else v


def _skip_modex(payload: bytes, pos: int, packet_type: int) -> tuple[int, int]:
    """Skip enhanced-rtmp v2 ModEx prefixes; return (position, real packet type).

    ModEx data (e.g. TimestampOffsetNano) is dropped: our timebase is milliseconds.
    """
    while packet_type == PT_MODEX:
        if pos >= len(payload):
            raise FLVFormatError("ModEx truncated")
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > len(payload):
                raise FLVFormatError("ModEx size truncated")
            size = int.from_bytes(payload[pos : pos + 2], "big") + 1
            pos += 2
        pos += size
        if pos >= len(payload):
            raise FLVFormatError("ModEx data truncated")
        packet_type = payload[pos] & 0x0F  # high nibble: ModEx type; low: next packet type
        pos += 1
    return pos, packet_type


def _ex_header(
    payload: bytes, multitrack_type: int, table: dict[bytes, str], what: str
) -> tuple[int, int, str, bool] | None:
    """Parse an Ex tag header after its first byte: ModEx, one-track Multitrack, FourCC, track id.

    Returns (body position, packet type, codec name, whether CodedFrames carry an SI24 composition
    time), or ``None`` for a track other than 0.
    """
    pos, packet_type = _skip_modex(payload, 1, payload[0] & 0x0F)
    multitrack = packet_type == multitrack_type
    if multitrack:
        if pos >= len(payload):
            raise FLVFormatError(f"{what} Multitrack header truncated")
        mode, packet_type = payload[pos] >> 4, payload[pos] & 0x0F
        pos += 1
        if mode != 0:  # ManyTracks / ManyTracksManyCodecs
            raise UnsupportedMediaError(
                f"enhanced RTMP {what} with several tracks is not supported"
            )
    if pos + 4 > len(payload):
        raise FLVFormatError(f"{what} FourCC truncated")
    fourcc = payload[pos : pos + 4]
    pos += 4
    codec = table.get(fourcc)
    if codec is None:
        raise UnsupportedMediaError(f"{what} codec {_fourcc_name(fourcc)} is not supported")
    if multitrack:
        if pos >= len(payload):
            raise FLVFormatError(f"{what} track id truncated")
        if payload[pos] != 0:
            return None  # we carry track 0 only
        pos += 1
    return pos, packet_type, codec, fourcc in _FOURCC_WITH_CTS


def parse_video(payload: bytes, dts: int, arrival: float) -> MediaUnit | None:
    """Return the unit in a video message body, or ``None`` for bodies that carry no media."""
    if not payload:
        return None
    b0 = payload[0]
    if b0 & 0x80:
        return _parse_ex_video(payload, dts, arrival)
    frame_type, codec_id = b0 >> 4, b0 & 0x0F
    if frame_type == VIDEO_COMMAND_FRAME:
        return None
    if not 1 <= frame_type <= 4:
        raise FLVFormatError(f"invalid video frame type {frame_type}")
    if codec_id != CODEC_AVC:
        name = _LEGACY_VIDEO_NAMES.get(codec_id, f"unknown codec id {codec_id}")
        raise UnsupportedMediaError(f"video codec {name} is not supported; send H.264")
    if len(payload) < 5:
        raise FLVFormatError(f"AVC video tag of {len(payload)} bytes is shorter than 5")
    packet_type = payload[1]
    keyframe = frame_type == VIDEO_KEYFRAME
    if packet_type == AVC_SEQUENCE_HEADER:
        return _unit(MediaKind.VIDEO, "h264", dts, 0, True, payload[5:], arrival, True)
    if packet_type == AVC_NALU:
        cts = _si24(payload[2:5])
        return _unit(MediaKind.VIDEO, "h264", dts, cts, keyframe, payload[5:], arrival)
    if packet_type == AVC_END_OF_SEQUENCE:
        return None
    raise FLVFormatError(f"invalid AVCPacketType {packet_type}")


def _parse_ex_video(payload: bytes, dts: int, arrival: float) -> MediaUnit | None:
    # enhanced-rtmp v2 "ExVideoTagHeader": IsExHeader | FrameType(3) | PacketType(4)
    frame_type = (payload[0] >> 4) & 0x07
    if frame_type == VIDEO_COMMAND_FRAME:
        # VideoCommand body (no picture) unless the packet type, after ModEx, is Metadata
        _, packet_type = _skip_modex(payload, 1, payload[0] & 0x0F)
        if packet_type != PT_METADATA:
            return None
    header = _ex_header(payload, PT_VIDEO_MULTITRACK, VIDEO_FOURCC, "video")
    if header is None:
        return None
    pos, packet_type, codec, has_cts = header
    if not 1 <= frame_type <= 4 and packet_type != PT_METADATA:
        raise FLVFormatError(f"invalid video frame type {frame_type}")
    keyframe = frame_type == VIDEO_KEYFRAME
    if packet_type == PT_SEQUENCE_START:
        return _unit(MediaKind.VIDEO, codec, dts, 0, True, payload[pos:], arrival, True)
    if packet_type == PT_CODED_FRAMES:
        cts = 0
        if has_cts:
            if pos + 3 > len(payload):
                raise FLVFormatError("CodedFrames composition time truncated")
            cts = _si24(payload[pos : pos + 3])
            pos += 3
        return _unit(MediaKind.VIDEO, codec, dts, cts, keyframe, payload[pos:], arrival)
    if packet_type == PT_CODED_FRAMES_X:
        return _unit(MediaKind.VIDEO, codec, dts, 0, keyframe, payload[pos:], arrival)
    if packet_type in (PT_SEQUENCE_END, PT_METADATA):
        return None
    if packet_type == PT_MPEG2TS_SEQUENCE_START:
        raise UnsupportedMediaError("MPEG-2 TS sequence start (enhanced RTMP) is not supported")
    raise FLVFormatError(f"invalid enhanced VideoPacketType {packet_type}")


def parse_audio(payload: bytes, dts: int, arrival: float) -> MediaUnit | None:
    """Return the unit in an audio message body, or ``None`` for bodies that carry no media."""
    if not payload:
        return None
    sound_format = payload[0] >> 4
    if sound_format == SOUND_AAC:
        if len(payload) < 2:
            raise FLVFormatError("AAC audio tag shorter than 2 bytes")
        if payload[1] == AAC_SEQUENCE_HEADER:
            return _unit(MediaKind.AUDIO, "aac", dts, 0, True, payload[2:], arrival, True)
        if payload[1] == AAC_RAW:
            return _unit(MediaKind.AUDIO, "aac", dts, 0, True, payload[2:], arrival)
        raise FLVFormatError(f"invalid AACPacketType {payload[1]}")
    if sound_format in (SOUND_MP3, SOUND_MP3_8K):
        return _unit(MediaKind.AUDIO, "mp3", dts, 0, True, payload[1:], arrival)
    if sound_format == SOUND_EX_HEADER:
        return _parse_ex_audio(payload, dts, arrival)
    name = _LEGACY_AUDIO_NAMES.get(sound_format, f"unknown sound format {sound_format}")
    raise UnsupportedMediaError(f"audio codec {name} is not supported; send AAC")


def _parse_ex_audio(payload: bytes, dts: int, arrival: float) -> MediaUnit | None:
    # enhanced-rtmp v2 "ExAudioTagHeader": SoundFormat 9 | AudioPacketType(4)
    header = _ex_header(payload, APT_MULTITRACK, AUDIO_FOURCC, "audio")
    if header is None:
        return None
    pos, packet_type, codec, _ = header
    if packet_type == PT_SEQUENCE_START:
        return _unit(MediaKind.AUDIO, codec, dts, 0, True, payload[pos:], arrival, True)
    if packet_type == PT_CODED_FRAMES:
        return _unit(MediaKind.AUDIO, codec, dts, 0, True, payload[pos:], arrival)
    if packet_type in (PT_SEQUENCE_END, APT_MULTICHANNEL_CONFIG):
        return None
    raise FLVFormatError(f"invalid enhanced AudioPacketType {packet_type}")


def _fourcc_name(fourcc: bytes) -> str:
    text = fourcc.decode("latin-1")
    return f"'{text}'" if text.isprintable() else f"FourCC 0x{fourcc.hex()}"


# -- writing: tag bodies for a publisher (the client role, the demo, the tests) ------------------
_AAC_HEAD = 0xAF  # §E.4.2.1: AAC, "44 kHz", 16-bit, stereo (the real format is in the ASC)


def _si24_bytes(value: int) -> bytes:
    if not -(1 << 23) <= value < 1 << 23:
        raise ValueError(f"composition time {value} ms does not fit SI24")
    return (value & 0xFFFFFF).to_bytes(3, "big")


def _frame_type(keyframe: bool) -> int:
    return VIDEO_KEYFRAME if keyframe else 2  # §E.4.3.1: 2 = inter frame


def avc_sequence_header_body(avcc: bytes) -> bytes:
    """Video body carrying an AVCDecoderConfigurationRecord (§E.4.3.1, AVCPacketType 0)."""
    return bytes((VIDEO_KEYFRAME << 4 | CODEC_AVC, AVC_SEQUENCE_HEADER)) + b"\0\0\0" + avcc


def avc_video_body(frame: bytes, keyframe: bool, cts: int = 0) -> bytes:
    """Video body for one AVCC (length-prefixed NAL units) frame; ``cts`` = pts - dts in ms."""
    head = bytes((_frame_type(keyframe) << 4 | CODEC_AVC, AVC_NALU))
    return head + _si24_bytes(cts) + frame


def ex_video_sequence_start_body(fourcc: bytes, config: bytes) -> bytes:
    """Enhanced RTMP SequenceStart (``hvc1``: HEVCDecoderConfigurationRecord, ``av01``: av1C,
    ``vp09``: vpcC)."""
    if fourcc not in VIDEO_FOURCC:
        raise ValueError(f"video FourCC {_fourcc_name(fourcc)} is not one we read")
    return bytes((0x80 | VIDEO_KEYFRAME << 4 | PT_SEQUENCE_START,)) + fourcc + config


def ex_video_frame_body(fourcc: bytes, frame: bytes, keyframe: bool, cts: int = 0) -> bytes:
    """Enhanced RTMP CodedFrames; ``avc1``/``hvc1`` carry the SI24 composition time, others none."""
    if fourcc not in VIDEO_FOURCC:
        raise ValueError(f"video FourCC {_fourcc_name(fourcc)} is not one we read")
    if fourcc not in _FOURCC_WITH_CTS and cts:
        raise ValueError(f"{_fourcc_name(fourcc)} frames carry no composition time")
    head = bytes((0x80 | _frame_type(keyframe) << 4 | PT_CODED_FRAMES,)) + fourcc
    return head + (_si24_bytes(cts) if fourcc in _FOURCC_WITH_CTS else b"") + frame


def aac_sequence_header_body(audio_specific_config: bytes) -> bytes:
    """Audio body carrying the AudioSpecificConfig (§E.4.2.1, AACPacketType 0)."""
    return bytes((_AAC_HEAD, AAC_SEQUENCE_HEADER)) + audio_specific_config


def aac_audio_body(raw: bytes) -> bytes:
    """Audio body for one raw AAC frame (AACPacketType 1)."""
    return bytes((_AAC_HEAD, AAC_RAW)) + raw
