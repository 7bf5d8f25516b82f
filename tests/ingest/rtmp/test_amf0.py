"""AMF0: every marker, exact errors, bounds, round trips and fuzz."""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp.amf0 import (
    UNDEFINED,
    AMF0Error,
    AMF0Limits,
    Date,
    ECMAArray,
    TypedObject,
    XMLDocument,
    decode_all,
    decode_one,
    encode,
)
from ingest.rtmp.errors import RTMPProtocolError


def num(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


def s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def test_connect_command_as_ffmpeg_sends_it() -> None:
    obj = {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": "rtmp://h/live"}
    data = encode("connect", 1.0, obj)
    assert data.startswith(b"\x02" + s("connect") + num(1.0) + b"\x03" + s("app") + b"\x02")
    assert data.endswith(b"\x00\x00\x09")
    assert decode_all(data) == ["connect", 1.0, obj]


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (num(-2.5), -2.5),
        (b"\x01\x00", False),
        (b"\x01\x07", True),
        (b"\x02" + s("héllo"), "héllo"),
        (b"\x05", None),
        (b"\x06", UNDEFINED),
        (b"\x03" + s("a") + num(1) + b"\x00\x00\x09", {"a": 1.0}),
        (b"\x08\x00\x00\x00\x05" + s("w") + num(2) + b"\x00\x00\x09", ECMAArray(w=2.0)),
        (b"\x0a\x00\x00\x00\x02" + num(1) + b"\x05", [1.0, None]),
        (b"\x0b" + struct.pack(">dh", 1.7e12, 0), Date(1.7e12, 0)),
        (b"\x0c\x00\x00\x00\x03abc", "abc"),
        (b"\x0f\x00\x00\x00\x04<a/>", XMLDocument("<a/>")),
        (b"\x10" + s("Cls") + s("x") + b"\x01\x01\x00\x00\x09", TypedObject("Cls", {"x": True})),
        (b"\x03" + s("") + num(3) + b"\x00\x00\x09", {"": 3.0}),  # empty key, not an end
    ],
)
def test_decode_each_type(wire: bytes, value: Any) -> None:
    (got,) = decode_all(wire)
    assert got == value and type(got) is type(value)
    assert decode_one(wire + b"\x05") == (value, len(wire))


def test_ecma_array_without_end_marker_at_end_of_data() -> None:
    # Some encoders omit the end marker of a trailing ECMA array (nginx-rtmp accepts it).
    assert decode_all(b"\x08\x00\x00\x00\x01" + s("w") + num(2)) == [ECMAArray(w=2.0)]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x04", "movieclip"),
        (b"\x0d", r"unsupported \(0x0D\)"),
        (b"\x0e", "recordset"),
        (b"\x11\x06", "AVM\\+ switch to AMF3"),
        (b"\x07\x00\x01", "reference \\(0x07\\) is not supported"),
        (b"\x12", "unknown AMF0 type marker 0x12"),
        (b"\x09", "object-end marker outside an object"),
        (b"\x00\x3f\xf0", "truncated in number"),
        (b"\x02\x00\x05ab", "truncated in string"),
        (b"\x03" + s("a"), "truncated in type marker"),
        (b"\x0a\xff\xff\xff\xff", "strict array of 4294967295 elements exceeds"),
        (b"\x0a\x00\x00\x00\x09\x05", "truncated in strict array of 9"),
    ],
)
def test_errors_are_clear(wire: bytes, message: str) -> None:
    with pytest.raises(AMF0Error, match=message):
        decode_all(wire)
    assert issubclass(AMF0Error, RTMPProtocolError)


def test_depth_limit() -> None:
    nested: Any = 1.0
    for _ in range(17):
        nested = {"n": nested}
    with pytest.raises(AMF0Error, match="nesting deeper than 16"):
        decode_all(encode(nested))
    assert decode_all(encode(nested), AMF0Limits(max_depth=20)) == [nested]


def test_item_string_and_value_limits() -> None:
    with pytest.raises(AMF0Error, match="more than 4 properties"):
        decode_all(encode({str(i): 1 for i in range(5)}), AMF0Limits(max_items=4))
    with pytest.raises(AMF0Error, match="string of 11 bytes exceeds the 10 limit"):
        decode_all(encode("x" * 11), AMF0Limits(max_string=10))
    with pytest.raises(AMF0Error, match="more than 5 AMF0 values"):
        decode_all(encode([1, 2, 3, 4, 5]), AMF0Limits(max_values=5))


def test_encode_long_string_and_type_errors() -> None:
    big = "y" * 70000
    assert encode(big)[0] == 0x0C
    assert decode_all(encode(big), AMF0Limits(max_string=1 << 17)) == [big]
    with pytest.raises(TypeError, match="no AMF0 encoding for bytes"):
        encode(b"raw")
    assert encode((1, "a")) == encode([1, "a"])


keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.builds(XMLDocument, st.text(max_size=10)),
    st.builds(Date, st.floats(allow_nan=False), st.integers(-32768, 32767)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5).map(ECMAArray),
        st.builds(TypedObject, st.text(max_size=5), st.dictionaries(keys, inner, max_size=3)),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=4))
def test_round_trip(items: list[Any]) -> None:
    assert decode_all(encode(*items)) == items


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_amf0error(data: bytes) -> None:
    with contextlib.suppress(AMF0Error):
        decode_all(data, AMF0Limits(max_items=16, max_values=64))


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=3), st.data())
def test_mutated_encodings_decode_or_amf0error(items: list[Any], data: st.DataObject) -> None:
    wire = bytearray(encode(*items))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(AMF0Error):
        decode_all(bytes(wire))


def test_nan_number() -> None:
    (got,) = decode_all(num(math.nan))
    assert math.isnan(got)
