"""AudioSpecificConfig: fields, codec strings, exact errors and fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import AacConfig, AacError, parse_audio_specific_config


@pytest.mark.parametrize(
    ("asc", "expected"),
    [
        ("1188", AacConfig(2, 48000, 1)),
        ("1210", AacConfig(2, 44100, 2)),
        ("118856e500", AacConfig(2, 48000, 1)),
        ("2b8a", AacConfig(5, 22050, 1)),
        ("17805dc010", AacConfig(2, 48000, 2)),  # explicit 24-bit rate (index 15)
        ("f8e200", AacConfig(39, 88200, 0)),  # escape: object type 32 + 7
    ],
)
def test_audio_specific_config(asc: str, expected: AacConfig) -> None:
    assert parse_audio_specific_config(bytes.fromhex(asc)) == expected
    assert expected.codec_string == f"mp4a.40.{expected.object_type}"


@pytest.mark.parametrize(
    ("asc", "message"),
    [("", "truncated"), ("12", "truncated"), ("1688", "index 13 is reserved"), ("0010", "type 0")],
)
def test_bad_audio_specific_config(asc: str, message: str) -> None:
    with pytest.raises(AacError, match=message):
        parse_audio_specific_config(bytes.fromhex(asc))
    assert issubclass(AacError, ValueError)  # callers may catch ValueError


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=12))
def test_fuzz_audio_specific_config(data: bytes) -> None:
    try:
        asc = parse_audio_specific_config(data)
    except AacError:
        return
    assert asc.sample_rate > 0 and asc.object_type > 0
