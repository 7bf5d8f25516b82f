"""Codec knowledge in one place: H.264 SPS/avcC, AAC AudioSpecificConfig, Annex B ↔ AVCC.

The bottom of the import graph (it imports nothing from shopcast's packages): ingest,
transcode, packager and the demo publisher all read and write codec formats through it.
"""

from __future__ import annotations

from ingest.codecs.aac import AAC_SAMPLE_RATES, AacConfig, AacError, parse_audio_specific_config
from ingest.codecs.annexb import annexb_from_nals, avcc_from_nals, iter_annexb, iter_avcc
from ingest.codecs.errors import BitstreamError
from ingest.codecs.h264 import (
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    SPS,
    AvcConfig,
    H264Error,
    annexb_to_avcc,
    parse_avcc,
    parse_sps,
    unescape_rbsp,
)

__all__ = [
    "AAC_SAMPLE_RATES",
    "NAL_AUD",
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SPS",
    "SPS",
    "AacConfig",
    "AacError",
    "AvcConfig",
    "BitstreamError",
    "H264Error",
    "annexb_from_nals",
    "annexb_to_avcc",
    "avcc_from_nals",
    "iter_annexb",
    "iter_avcc",
    "parse_audio_specific_config",
    "parse_avcc",
    "parse_sps",
    "unescape_rbsp",
]
