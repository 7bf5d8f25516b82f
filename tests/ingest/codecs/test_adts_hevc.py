"""AudioSpecificConfig serialization, ADTS frames and the HEVC SPS/hvcC helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.codecs import (
    AacConfig,
    AacError,
    HevcConfig,
    HevcError,
    audio_specific_config,
    parse_adts_frame,
    parse_audio_specific_config,
)


@pytest.mark.parametrize(
    "config",
    [
        AacConfig(2, 48000, 2),
        AacConfig(2, 44100, 1),
        AacConfig(5, 24000, 2),
        AacConfig(2, 48000, 2, 960),
        AacConfig(2, 37800, 2),
    ],
)
def test_audio_specific_config_round_trip(config: AacConfig) -> None:
    assert parse_audio_specific_config(audio_specific_config(config)) == config


def test_adts_header_fields() -> None:
    frame = bytes([0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC]) + b"\x21" * 9
    parsed = parse_adts_frame(frame)
    assert parsed.config == AacConfig(2, 44100, 2) and parsed.payload == b"\x21" * 9


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "ADTS frame of 7 bytes, header says 16"),
        (b"\xff\xe1\x50\x80\x00\xff\xfc", "syncword/layer expected"),
        (b"\xff\xf1\x7c\x80\x02\x1f\xfc" + b"\0" * 9, "sampling frequency index 15 is reserved"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfd" + b"\0" * 9, "2 raw data blocks is not supported"),
    ],
)
def test_adts_errors(frame: bytes, message: str) -> None:
    with pytest.raises(AacError, match=message):
        parse_adts_frame(frame)


def test_hevc_config_needs_all_parameter_sets() -> None:
    with pytest.raises(HevcError, match="needs a VPS, an SPS and a PPS"):
        HevcConfig((b"\x40\x01",), (), (b"\x44\x01",))
    with pytest.raises(HevcError, match="not an HEVC SPS"):
        HevcConfig((b"\x40\x01",), (b"\x42\x01\x01",), (b"\x44\x01",))


def test_hvcc_round_trip_and_truncation() -> None:
    data = (Path(__file__).parents[1] / "vectors" / "ts_hevc_aac.ts").read_bytes()
    # the first PES of PID 0x100 starts with the keyframe's VPS/SPS/PPS (Annex B)
    first = data.find(b"\x00\x00\x00\x01\x40\x01")
    config = HevcConfig.from_annexb(data[first : first + 150])
    assert HevcConfig.parse(config.to_bytes()) == config
    assert (config.sps_info.width, config.sps_info.height) == (180, 320)
    record = config.to_bytes()
    with pytest.raises(HevcError, match="runs past the record"):
        HevcConfig.parse(record[:-3])
    with pytest.raises(HevcError, match="configurationVersion"):
        HevcConfig.parse(b"\x00" * 23)
