"""NAL unit framing: Annex B byte streams (start codes) and AVCC payloads (length prefixes).

Codec-neutral (H.264 and HEVC frame NAL units the same way); ``h264.annexb_to_avcc`` adds the
H.264 rule for which NAL units an fMP4 sample keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ingest.codecs.errors import BitstreamError

START_CODE = b"\x00\x00\x00\x01"
_SHORT_START = b"\x00\x00\x01"


def iter_annexb(data: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes), without start codes.

    Zero bytes before a start code are ``trailing_zero_8bits`` / the first byte of a 4-byte
    start code (H.264 §B.1.1), never NAL data: a NAL unit cannot end in ``00`` (§7.4.1).
    Bytes before the first start code are not a NAL unit and are skipped.
    """
    i = data.find(_SHORT_START)
    while i >= 0:
        begin = i + 3
        i = data.find(_SHORT_START, begin)
        nal = data[begin : i if i >= 0 else len(data)].rstrip(b"\x00")
        if nal:
            yield nal


def annexb_from_nals(nals: Iterable[bytes]) -> bytes:
    """NAL units as an Annex B byte stream with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in nals)


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


def avcc_from_nals(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    """NAL units as one length-prefixed (AVCC) payload, as fMP4 ``mdat`` and FLV carry them."""
    out = bytearray()
    for nal in nals:
        out += len(nal).to_bytes(length_size, "big")
        out += nal
    return bytes(out)
