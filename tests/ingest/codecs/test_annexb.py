"""Annex B and AVCC framing: split(build(nals)) == nals for any valid NAL units (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import (
    BitstreamError,
    annexb_from_nals,
    avcc_from_nals,
    iter_annexb,
    iter_avcc,
    unescape_rbsp,
)


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes (H.264 §7.4.1), so no start code can appear inside."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    if out and out[-1] == 0:
        out.append(3)  # a NAL unit never ends in 00 (§7.4.1: cabac_zero_word)
    return bytes(out)


@st.composite
def nal_units(draw: st.DrawFn, max_size: int = 300) -> bytes:
    header = draw(st.integers(0, 3)) << 5 | draw(st.integers(1, 23))
    rbsp = draw(st.binary(min_size=0, max_size=max_size))
    return bytes([header]) + escape_rbsp(rbsp)


@settings(max_examples=500, deadline=None)
@given(st.lists(nal_units(), max_size=8), st.data())
def test_annexb_split_of_build_is_identity(nals: list[bytes], data: st.DataObject) -> None:
    assert list(iter_annexb(annexb_from_nals(nals))) == nals
    # 3-byte start codes, leading zeros and trailing_zero_8bits between units (§B.1.1) too.
    stream = b"\x00" * data.draw(st.integers(0, 3))
    for nal in nals:
        code = data.draw(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"]))
        stream += code + nal + b"\x00" * data.draw(st.integers(0, 2))
    assert list(iter_annexb(stream)) == nals


@settings(max_examples=300, deadline=None)
@given(st.lists(nal_units(max_size=250), max_size=8), st.sampled_from([1, 2, 4]))
def test_avcc_split_of_build_is_identity(nals: list[bytes], length_size: int) -> None:
    payload = avcc_from_nals(nals, length_size)
    assert list(iter_avcc(payload, length_size)) == nals
    # And across the two framings.
    assert avcc_from_nals(iter_annexb(annexb_from_nals(nals)), length_size) == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_escape_then_unescape_is_identity(rbsp: bytes) -> None:
    escaped = escape_rbsp(rbsp)
    assert b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped
    unescaped = unescape_rbsp(escaped)
    assert unescaped == rbsp or (rbsp.endswith(b"\x00") and unescaped == rbsp + b"\x03")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([1, 2, 4]))
def test_avcc_split_parses_or_raises_bitstream_error(payload: bytes, length_size: int) -> None:
    try:
        nals = list(iter_avcc(payload, length_size))
    except BitstreamError:
        return
    assert avcc_from_nals(nals, length_size) == payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00\x00", "truncated NAL length prefix"),
        (b"\x00\x00\x00\x05\x65\x88", "NAL length 5 runs past the payload end"),
        (b"\x00\x00\x00\x00", "NAL length 0 runs past the payload end"),
    ],
)
def test_avcc_split_errors_are_exact(payload: bytes, message: str) -> None:
    with pytest.raises(BitstreamError) as caught:
        list(iter_avcc(payload))
    assert str(caught.value) == message


def test_bytes_before_the_first_start_code_are_not_a_nal_unit() -> None:
    assert list(iter_annexb(b"\x65\x88garbage\x00\x00\x01\x67\x42")) == [b"\x67\x42"]
    assert list(iter_annexb(b"no start code at all")) == []
