"""avcC and SPS parsing against real libx264 output, plus exact errors and fuzz."""

from __future__ import annotations

import contextlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import H264Error, parse_avcc, parse_sps, unescape_rbsp

CONFIGS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "h264_configs.json").read_text()
)
PROFILES = {
    "Constrained Baseline": 66,
    "High": 100,
    "High 10": 110,
    "High 4:2:2": 122,
    "High 4:4:4 Predictive": 244,
}


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c["command"].split()[3] for c in CONFIGS])
def test_libx264_configs(cfg: dict[str, Any]) -> None:
    avcc = parse_avcc(bytes.fromhex(cfg["avcc"]))
    sps = avcc.sps_info
    assert sps is not None
    assert (sps.width, sps.height) == (cfg["width"], cfg["height"])
    assert sps.profile_idc == PROFILES[cfg["profile"]] == avcc.profile_idc
    assert sps.level_idc == cfg["level"] == avcc.level_idc
    assert sps.fps == Fraction(25)
    assert avcc.length_size == 4 and len(avcc.sps) == 1 and len(avcc.pps) == 1
    assert sps.codec_string == avcc.codec_string
    assert (
        sps.codec_string
        == f"avc1.{sps.profile_idc:02x}{sps.constraint_flags:02x}{sps.level_idc:02x}"
    )
    assert sps.frame_mbs_only == ("ilme" not in cfg["command"])
    assert sps.bit_depth_luma == (10 if "10le" in cfg["pix_fmt"] else 8)
    chroma = {"yuv420p": 1, "yuv420p10le": 1, "yuv422p": 2, "yuv444p": 3}[cfg["pix_fmt"]]
    assert sps.chroma_format_idc == chroma


def test_codec_string_example() -> None:
    cfg = next(c for c in CONFIGS if c["width"] == 720 and c["height"] == 1280)
    assert parse_avcc(bytes.fromhex(cfg["avcc"])).codec_string == "avc1.64001f"


def test_emulation_prevention_is_removed() -> None:
    assert unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03\x00\x03") == b"\x00\x00\x01\x00\x00\x00\x03"


SPS_180x320 = bytes.fromhex("6764000dacd943029e7f0110000003001000000303c0f1429960")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x67\x64\x00", "shorter than 4"),
        (b"\x68\x64\x00\x0d\xff", "is not an SPS"),
        (b"\xe7\x64\x00\x0d\xff", "is not an SPS"),
        (SPS_180x320[:6], "SPS truncated"),
        (b"\x67\x42\x00\x1e" + b"\x00" * 5 + b"\x01", "longer than 32 bits"),
        (b"\x67\x64\x00\x1e\x88", "exceeds 3"),  # chroma_format_idc 7 (ue "0001000")
    ],
)
def test_sps_errors(data: bytes, message: str) -> None:
    with pytest.raises(H264Error, match=message):
        parse_sps(data)
    assert issubclass(H264Error, ValueError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x64\x00", "shorter than 7"),
        (b"\x02\x64\x00\x0d\xff\xe1\x00", "configurationVersion 2"),
        (b"\x01\x64\x00\x0d\xfe\xe1\x00", "NAL length size 3"),
        (b"\x01\x64\x00\x0d\xff\xe1\x00\x05\x67", "SPS of 5 bytes is empty or truncated"),
        (b"\x01\x64\x00\x0d\xff\xe1\x00", "truncated in a SPS length"),
        (b"\x01\x64\x00\x0d\xff\xe0", "shorter than 7"),
        (b"\x01\x64\x00\x0d\xff\xe0\x01\x00", "truncated in a PPS length"),
    ],
)
def test_avcc_errors(data: bytes, message: str) -> None:
    with pytest.raises(H264Error, match=message):
        parse_avcc(data)


def test_avcc_without_sps() -> None:
    avcc = parse_avcc(b"\x01\x64\x00\x0d\xff\xe0\x00")
    assert avcc.sps_info is None and avcc.sps == () and avcc.pps == ()


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=40))
def test_fuzz_sps(data: bytes) -> None:
    try:
        sps = parse_sps(b"\x67" + data)
    except H264Error:
        return
    assert sps.width > 0 and sps.height > 0


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(CONFIGS), st.data())
def test_fuzz_mutated_avcc(cfg: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(bytes.fromhex(cfg["avcc"]))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(H264Error):
        parse_avcc(bytes(raw))
