"""Codec knowledge in one place: H.264 SPS/avcC, HEVC SPS/hvcC, AV1 av1C, VP9 vpcC, AAC
AudioSpecificConfig and ADTS, Annex B ↔ AVCC.

The bottom of the import graph (it imports nothing from shopcast's packages): ingest,
transcode, packager and the demo publisher all read and write codec formats through it.
"""

from __future__ import annotations

from ingest.codecs.aac import (
    AAC_SAMPLE_RATES,
    AacConfig,
    AacError,
    audio_specific_config,
    parse_audio_specific_config,
)
from ingest.codecs.adts import MAX_ADTS_FRAME, AdtsFrame, adts_frame_length, parse_adts_frame
from ingest.codecs.annexb import annexb_from_nals, avcc_from_nals, iter_annexb, iter_avcc
from ingest.codecs.av1 import Av1Config, Av1Error, Av1SequenceHeader, iter_obus
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
from ingest.codecs.hevc import (
    HevcConfig,
    HevcError,
    HevcSPS,
    annexb_to_hevc_sample,
    parse_hevc_sps,
)
from ingest.codecs.vp9 import Vp9Config, Vp9Error, Vp9FrameHeader, parse_keyframe_header

__all__ = [
    "AAC_SAMPLE_RATES",
    "MAX_ADTS_FRAME",
    "NAL_AUD",
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SPS",
    "SPS",
    "AacConfig",
    "AacError",
    "AdtsFrame",
    "Av1Config",
    "Av1Error",
    "Av1SequenceHeader",
    "AvcConfig",
    "BitstreamError",
    "H264Error",
    "HevcConfig",
    "HevcError",
    "HevcSPS",
    "Vp9Config",
    "Vp9Error",
    "Vp9FrameHeader",
    "adts_frame_length",
    "annexb_from_nals",
    "annexb_to_avcc",
    "annexb_to_hevc_sample",
    "audio_specific_config",
    "avcc_from_nals",
    "iter_annexb",
    "iter_avcc",
    "iter_obus",
    "parse_adts_frame",
    "parse_audio_specific_config",
    "parse_avcc",
    "parse_hevc_sps",
    "parse_keyframe_header",
    "parse_sps",
    "unescape_rbsp",
]
