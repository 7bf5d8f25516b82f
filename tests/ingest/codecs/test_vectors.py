"""Recorded Debian ffmpeg vectors: avcC round trips, SPS facts, Annex B → FFmpeg's avcC, ASC.

The vectors and ``codecs.json`` come from ``vectors/record_codecs.py``; ffprobe's answers in the
JSON are the expected values, FFmpeg's own avcC writer the expected bytes.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import (
    NAL_PPS,
    NAL_SPS,
    AacError,
    AvcConfig,
    BitstreamError,
    H264Error,
    annexb_to_avcc,
    iter_annexb,
    iter_avcc,
    parse_audio_specific_config,
    parse_avcc,
    parse_sps,
)

VECTORS = Path(__file__).parent / "vectors"
INDEX: dict[str, dict[str, dict[str, Any]]] = json.loads((VECTORS / "codecs.json").read_text())
VIDEO = sorted(INDEX["video"])
AUDIO = sorted(INDEX["audio"])
PROFILES = {"Constrained Baseline": 66, "Main": 77, "High": 100, "High 10": 110, "High 4:2:2": 122}
#: pix_fmt → (chroma_format_idc, bit depth)
FORMATS = {
    "yuv420p": (1, 8),
    "yuv420p10le": (1, 10),
    "yuv422p": (2, 8),
    "yuv422p10le": (2, 10),
}


def avcc(name: str) -> bytes:
    return (VECTORS / f"avcc_{name}.bin").read_bytes()


def annexb(name: str) -> bytes:
    return (VECTORS / f"annexb_{name}.bin").read_bytes()


@pytest.mark.parametrize("name", VIDEO)
def test_avcc_parse_serialize_gives_the_same_bytes(name: str) -> None:
    raw = avcc(name)
    config = parse_avcc(raw)
    assert config.to_bytes() == raw
    assert AvcConfig.parse(raw) == config
    assert config.codec_string == f"avc1.{raw[1:4].hex()}"


@pytest.mark.parametrize("name", VIDEO)
def test_sps_says_what_ffprobe_says(name: str) -> None:
    want = INDEX["video"][name]
    config = parse_avcc(avcc(name))
    sps = config.sps_info
    assert sps is not None
    assert (sps.width, sps.height) == (want["width"], want["height"])
    assert sps.profile_idc == PROFILES[want["profile"]] == config.profile_idc
    assert sps.level_idc == want["level"] == config.level_idc
    chroma, depth = FORMATS[want["pix_fmt"]]
    assert (sps.chroma_format_idc, sps.bit_depth_luma, sps.bit_depth_chroma) == (
        chroma,
        depth,
        depth,
    )
    assert sps.codec_string == config.codec_string


@pytest.mark.parametrize("name", VIDEO)
def test_annexb_parameter_sets_give_ffmpegs_avcc_and_the_sample_decodes(name: str) -> None:
    stream = annexb(name)
    config = AvcConfig.from_annexb(stream)
    assert config.to_bytes() == avcc(name)  # FFmpeg's ff_isom_write_avcc, byte for byte
    sample = annexb_to_avcc(stream)
    nal_types = [nal[0] & 0x1F for nal in iter_avcc(sample)]
    assert NAL_SPS not in nal_types and NAL_PPS not in nal_types and 5 in nal_types
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = config.to_bytes()
    frames = [*decoder.decode(av.Packet(sample)), *decoder.decode(None)]
    want = INDEX["video"][name]
    assert [(f.width, f.height, f.format.name) for f in frames] == [
        (want["width"], want["height"], want["pix_fmt"])
    ]


def test_trailer_follows_the_sps_not_a_fixed_420_8_bit() -> None:
    # chromaFormat / bitDepthLumaMinus8 / bitDepthChromaMinus8 / numOfSequenceParameterSetExt
    trailers = {name: parse_avcc(avcc(name)).to_bytes()[-4:].hex() for name in VIDEO}
    assert trailers["high_420_8bit"] == "fdf8f800"
    assert trailers["high10_420"] == "fdfafa00"
    assert trailers["high422_8bit"] == "fef8f800"
    assert trailers["high422_10bit"] == "fefafa00"
    for name in ("baseline", "main"):  # no trailer for profiles 66 and 77
        config = parse_avcc(avcc(name))
        end = 5 + 2 + sum(2 + len(n) for n in config.sps + config.pps)  # + two counts
        assert len(config.to_bytes()) == end


def _avcc_cuts(raw: bytes) -> list[tuple[bytes, str]]:
    sps_len = int.from_bytes(raw[6:8], "big")
    pps_at = 8 + sps_len + 1
    pps_len = int.from_bytes(raw[pps_at : pps_at + 2], "big")
    half_sps = raw[8 : 8 + sps_len // 2]
    return [
        (raw[:6], "avcC of 6 bytes is shorter than 7"),
        (raw[:7], "avcC truncated in a SPS length"),
        (raw[: 8 + sps_len - 1], f"avcC SPS of {sps_len} bytes is empty or truncated"),
        (raw[: 8 + sps_len], "avcC truncated before its PPS count"),
        (raw[: pps_at + 1], "avcC truncated in a PPS length"),
        (raw[: pps_at + 2 + pps_len - 1], f"avcC PPS of {pps_len} bytes is empty or truncated"),
        (b"\x00" + raw[1:], "avcC configurationVersion 0 is not 1"),
        (raw[:4] + b"\xfe" + raw[5:], "avcC NAL length size 3 is not allowed"),
        (raw[:8] + b"\x68" + raw[9:], "NAL header 0x68 is not an SPS"),
        (raw[:6] + len(half_sps).to_bytes(2, "big") + half_sps + b"\x00", "SPS truncated"),
    ]


@pytest.mark.parametrize("name", VIDEO)
def test_truncated_and_garbage_avcc_give_exact_errors(name: str) -> None:
    for data, message in _avcc_cuts(avcc(name)):
        with pytest.raises(H264Error) as caught:
            parse_avcc(data)
        assert str(caught.value) == message


def test_records_without_parameter_sets_are_refused_by_the_strict_parser() -> None:
    raw = avcc("high_420_8bit")
    no_pps = raw[: 8 + int.from_bytes(raw[6:8], "big")] + b"\x00"
    assert parse_avcc(no_pps).pps == ()
    with pytest.raises(H264Error) as caught:
        AvcConfig.parse(no_pps)
    assert str(caught.value) == "avcC record has no PPS"
    with pytest.raises(H264Error) as caught:
        AvcConfig.from_annexb(b"\x00\x00\x00\x01\x09\xf0")
    assert str(caught.value) == "global header lacks SPS/PPS"


@pytest.mark.parametrize("name", AUDIO)
def test_audio_specific_config_says_what_ffprobe_says(name: str) -> None:
    want = INDEX["audio"][name]
    config = parse_audio_specific_config((VECTORS / f"asc_{name}.bin").read_bytes())
    assert want["profile"] == "LC" and config.object_type == 2
    assert (config.sample_rate, config.channels) == (want["sample_rate"], want["channels"])
    assert config.frame_length == 1024 and config.is_lc_passthrough_ready
    assert config.codec_string == "mp4a.40.2"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "AudioSpecificConfig truncated"),
        (b"\x11", "AudioSpecificConfig truncated"),  # 48 kHz stereo cut after 8 bits
        (b"\x00\x00", "AudioSpecificConfig object type 0 is invalid"),
        (b"\x16\x88", "AudioSpecificConfig sampling frequency index 13 is reserved"),
        (b"\x17\x80\x00\x00\x10", "AudioSpecificConfig sampling rate 0"),
    ],
)
def test_truncated_and_garbage_asc_give_exact_errors(data: bytes, message: str) -> None:
    with pytest.raises(AacError) as caught:
        parse_audio_specific_config(data)
    assert str(caught.value) == message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VIDEO), st.data())
def test_if_a_mutated_avcc_parses_it_reserializes(name: str, data: st.DataObject) -> None:
    raw = bytearray(avcc(name))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(BitstreamError):
        config = parse_avcc(bytes(raw))
        assert parse_avcc(config.to_bytes()) == config


def test_sps_of_every_vector_parses_on_its_own() -> None:
    for name in VIDEO:
        config = parse_avcc(avcc(name))
        assert parse_sps(config.sps[0]) == config.sps_info
        assert [n for n in iter_annexb(annexb(name)) if n[0] & 0x1F == NAL_SPS] == [config.sps[0]]
