"""ADTS (ISO/IEC 14496-3 §1.A.2.2): the self-framed AAC that MPEG-TS carries (stream type 0x0F)."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.codecs.aac import AAC_SAMPLE_RATES, AacConfig, AacError

ADTS_HEADER_SIZE = 7  # without the CRC; protection_absent = 0 adds 2 bytes
#: aac_frame_length is 13 bits: no ADTS frame is longer.
MAX_ADTS_FRAME = (1 << 13) - 1


@dataclass(frozen=True, slots=True)
class AdtsFrame:
    """One ADTS frame: the configuration its header states and the raw AAC frame it carries."""

    config: AacConfig
    payload: bytes


def adts_frame_length(header: bytes) -> int:
    """The whole frame's length (header included) from its first 6 bytes; raises on a bad header."""
    if len(header) < 6:
        raise AacError("ADTS header truncated")
    if header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
        raise AacError(f"ADTS syncword/layer expected, found {header[:2].hex()}")
    length = (header[3] & 0x03) << 11 | header[4] << 3 | header[5] >> 5
    if length < ADTS_HEADER_SIZE + (0 if header[1] & 1 else 2):
        raise AacError(f"ADTS frame length {length} is shorter than its header")
    return length


def parse_adts_frame(frame: bytes) -> AdtsFrame:
    """Parse one complete ADTS frame (``adts_frame_length`` bytes); raises :class:`AacError`."""
    length = adts_frame_length(frame)
    if len(frame) != length:
        raise AacError(f"ADTS frame of {len(frame)} bytes, header says {length}")
    index = frame[2] >> 2 & 0x0F
    if index >= len(AAC_SAMPLE_RATES):
        raise AacError(f"ADTS sampling frequency index {index} is reserved")
    if frame[6] & 0x03:
        # §1.A.3.2.1: several raw_data_blocks need per-block CRC/offset parsing; encoders send one.
        raise AacError(f"ADTS frame with {(frame[6] & 0x03) + 1} raw data blocks is not supported")
    channels = (frame[2] & 0x01) << 2 | frame[3] >> 6
    config = AacConfig((frame[2] >> 6) + 1, AAC_SAMPLE_RATES[index], channels)
    header = ADTS_HEADER_SIZE + (0 if frame[1] & 1 else 2)
    if length == header:
        raise AacError("ADTS frame carries no audio")
    return AdtsFrame(config, bytes(frame[header:]))
