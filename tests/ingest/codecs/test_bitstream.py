"""Annex B ↔ AVCC, avcC records, AudioSpecificConfig and CODECS strings."""

from __future__ import annotations

import pytest

from ingest.codecs import (
    AvcConfig,
    BitstreamError,
    annexb_to_avcc,
    iter_annexb,
    iter_avcc,
    parse_audio_specific_config,
)

SPS = bytes.fromhex("6764001facd9405005bb011000000300100000030300f1831960")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = bytes.fromhex("65888400") + b"\x00\x00\x03\x01" + b"\xaa" * 10  # emulation prevention kept


def test_annexb_split_with_3_and_4_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    assert list(iter_annexb(stream)) == [SPS, PPS, IDR]


def test_annexb_to_avcc_drops_parameter_sets_and_aud() -> None:
    aud = b"\x09\xf0"
    stream = b"\x00\x00\x00\x01" + aud + b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + IDR
    avcc = annexb_to_avcc(stream)
    assert avcc == len(IDR).to_bytes(4, "big") + IDR
    assert list(iter_avcc(avcc)) == [IDR]
    kept = annexb_to_avcc(stream, drop_parameter_sets=False)
    assert list(iter_avcc(kept)) == [SPS, IDR]


def test_avcc_length_past_end_is_an_error() -> None:
    with pytest.raises(BitstreamError, match="runs past"):
        list(iter_avcc(b"\x00\x00\x00\x09abc"))


def test_avcc_record_round_trip_and_codec_string() -> None:
    config = AvcConfig.from_annexb(b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS)
    assert config.codec_string == "avc1.64001f"
    record = config.to_bytes()
    assert record[:5] == bytes([1, 0x64, 0x00, 0x1F, 0xFF])
    again = AvcConfig.parse(record)
    assert again == config


def test_avcc_record_without_sps_is_refused() -> None:
    record = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE0, 1, 0, len(PPS)]) + PPS
    with pytest.raises(BitstreamError, match="no SPS"):
        AvcConfig.parse(record)
    with pytest.raises(BitstreamError):
        AvcConfig.parse(b"\x01\x64")


@pytest.mark.parametrize(
    ("asc", "object_type", "rate", "channels", "passthrough"),
    [
        ("1190", 2, 48000, 2, True),
        ("1210", 2, 44100, 2, True),
        ("1188", 2, 48000, 1, True),
        ("1390", 2, 22050, 2, False),
        ("2b92", 5, 22050, 2, False),  # HE-AAC (SBR) signalled explicitly
        ("1194", 2, 48000, 2, False),  # 960-sample frames
    ],
)
def test_audio_specific_config(
    asc: str, object_type: int, rate: int, channels: int, passthrough: bool
) -> None:
    config = parse_audio_specific_config(bytes.fromhex(asc))
    assert (config.object_type, config.sample_rate, config.channels) == (
        object_type,
        rate,
        channels,
    )
    assert config.codec_string == f"mp4a.40.{object_type}"
    assert config.is_lc_passthrough_ready is passthrough
