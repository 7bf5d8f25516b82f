"""MPEG-4 audio: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) and its codec string."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.codecs.errors import BitstreamError

# ISO/IEC 14496-3 §1.6.3.4 samplingFrequencyIndex
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
                    8000, 7350)  # fmt: skip


class AacError(BitstreamError):
    """A malformed AudioSpecificConfig."""


@dataclass(frozen=True, slots=True)
class AacConfig:
    """The head of an AudioSpecificConfig: what a packager and a passthrough decision need."""

    object_type: int  # 2 = AAC LC, 5 = SBR (HE-AAC), 29 = PS (HE-AACv2)
    sample_rate: int
    channels: int  # 0: defined by a program config element
    frame_length: int = 1024  # samples per frame; 960 when GASpecificConfig says so

    @property
    def codec_string(self) -> str:
        """RFC 6381 codec string, e.g. ``mp4a.40.2``."""
        return f"mp4a.40.{self.object_type}"

    @property
    def is_lc_passthrough_ready(self) -> bool:
        """AAC-LC at 44.1 or 48 kHz with 1024-sample frames: what HLS players take as is."""
        return (
            self.object_type == 2
            and self.sample_rate in (44100, 48000)
            and self.frame_length == 1024
            and self.channels in (1, 2)
        )


def parse_audio_specific_config(data: bytes) -> AacConfig:
    """Parse object type, sampling rate, channels and frame length; raises :class:`AacError`."""
    bits = int.from_bytes(data[:8], "big")
    nbits = min(len(data), 8) * 8
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        if pos + n > nbits:
            raise AacError("AudioSpecificConfig truncated")
        pos += n
        return (bits >> (nbits - pos)) & ((1 << n) - 1)

    object_type = take(5)
    if object_type == 31:
        object_type = 32 + take(6)
    if object_type == 0:
        raise AacError("AudioSpecificConfig object type 0 is invalid")
    index = take(4)
    if index == 15:
        rate = take(24)
    elif index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[index]
    else:
        raise AacError(f"AudioSpecificConfig sampling frequency index {index} is reserved")
    if rate == 0:
        raise AacError("AudioSpecificConfig sampling rate 0")
    channels = take(4)
    # GASpecificConfig (§4.4.1): frameLengthFlag selects 960-sample frames for AAC-LC.
    frame_length = 960 if object_type == 2 and pos < nbits and take(1) else 1024
    return AacConfig(object_type, rate, channels, frame_length)


def audio_specific_config(config: AacConfig) -> bytes:
    """Serialize ``config`` as a 2-byte (or, for an explicit rate, 5-byte) AudioSpecificConfig."""
    if not 0 < config.object_type < 31:
        raise AacError(f"object type {config.object_type} needs the escape form")
    if not 0 <= config.channels < 16:
        raise AacError(f"channel configuration {config.channels} is out of range")
    bits, nbits = config.object_type, 5
    if config.sample_rate in AAC_SAMPLE_RATES:
        bits, nbits = bits << 4 | AAC_SAMPLE_RATES.index(config.sample_rate), nbits + 4
    else:
        bits, nbits = (bits << 4 | 15) << 24 | config.sample_rate, nbits + 28
    # GASpecificConfig: frameLengthFlag, dependsOnCoreCoder = 0, extensionFlag = 0
    bits = (bits << 4 | config.channels) << 3 | (4 if config.frame_length == 960 else 0)
    nbits += 7
    pad = -nbits % 8
    return (bits << pad).to_bytes((nbits + pad) // 8, "big")
