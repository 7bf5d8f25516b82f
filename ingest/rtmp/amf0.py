"""AMF0 decoder and encoder (Adobe AMF0 specification), bounded.

Python mapping: number → ``float``, boolean → ``bool``, string/long string → ``str``,
object → ``dict``, null → ``None``, undefined → :data:`UNDEFINED`, ECMA array → :class:`ECMAArray`,
strict array → ``list``, date → :class:`Date`, XML document → :class:`XMLDocument`,
typed object → :class:`TypedObject`. References (0x07) are rejected, not resolved.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.limits import MAX_AMF_DEPTH, MAX_AMF_ITEMS, MAX_AMF_STRING, MAX_AMF_VALUES

# AMF0 spec §2.1 type markers
NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

_UNSUPPORTED_NAMES = {
    MOVIECLIP: "movieclip (0x04, reserved)",
    UNSUPPORTED: "unsupported (0x0D)",
    RECORDSET: "recordset (0x0E, reserved)",
    AVMPLUS: "AVM+ switch to AMF3 (0x11)",
}
_DOUBLE = struct.Struct(">d")
_DATE = struct.Struct(">dh")


class AMF0Error(RTMPProtocolError):
    """Malformed, unsupported or over-limit AMF0 data."""


class _Undefined(enum.Enum):
    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"


#: The AMF0 ``undefined`` value (distinct from ``null``/``None``).
UNDEFINED = _Undefined.UNDEFINED


class ECMAArray(dict[str, Any]):
    """An AMF0 ECMA array (associative array); encodes back as marker 0x08."""


class XMLDocument(str):
    """An AMF0 XML document, kept as its text; encodes back as marker 0x0F."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Date:
    """AMF0 date: milliseconds since the Unix epoch (UTC) and the (unused) time-zone field."""

    millis: float
    timezone: int = 0


@dataclass(frozen=True, slots=True)
class TypedObject:
    """AMF0 typed object: a class name and its properties."""

    class_name: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AMF0Limits:
    """Bounds on untrusted AMF0 input."""

    max_depth: int = MAX_AMF_DEPTH
    max_string: int = MAX_AMF_STRING  # bytes in one string/long string/XML document
    max_items: int = MAX_AMF_ITEMS  # properties or elements of one container
    max_values: int = MAX_AMF_VALUES  # values in one decode_all() call, all levels


class _Decoder:
    __slots__ = ("data", "limits", "pos", "values")

    def __init__(self, data: bytes, limits: AMF0Limits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.values = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AMF0Error(f"AMF0 data truncated in {what} at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def text(self, n: int, what: str) -> str:
        if n > self.limits.max_string:
            raise AMF0Error(f"AMF0 {what} of {n} bytes exceeds the {self.limits.max_string} limit")
        return self.take(n, what).decode("utf-8", "replace")

    def short_string(self, what: str) -> str:
        return self.text(int.from_bytes(self.take(2, what), "big"), what)

    def long_string(self, what: str) -> str:
        return self.text(int.from_bytes(self.take(4, what), "big"), what)

    def properties(self, depth: int, lenient_end: bool = False) -> dict[str, Any]:
        """Read ``key, value`` pairs up to the empty-key + object-end marker (AMF0 §2.5)."""
        out: dict[str, Any] = {}
        while True:
            if lenient_end and self.pos == len(self.data):
                return out  # some encoders omit the ECMA array's end marker at message end
            key = self.short_string("property name")
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return out
            if len(out) >= self.limits.max_items:
                raise AMF0Error(f"AMF0 object has more than {self.limits.max_items} properties")
            out[key] = self.value(depth + 1)

    def value(self, depth: int = 0) -> Any:
        self.values += 1
        if self.values > self.limits.max_values:
            raise AMF0Error(f"more than {self.limits.max_values} AMF0 values")
        if depth > self.limits.max_depth:
            raise AMF0Error(f"AMF0 nesting deeper than {self.limits.max_depth}")
        marker = self.take(1, "type marker")[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self.take(8, "number"))[0]
        if marker == BOOLEAN:
            return self.take(1, "boolean")[0] != 0
        if marker == STRING:
            return self.short_string("string")
        if marker == OBJECT:
            return self.properties(depth)
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == ECMA_ARRAY:
            self.take(4, "ECMA array count")  # advisory only; the end marker terminates it
            return ECMAArray(self.properties(depth, lenient_end=True))
        if marker == STRICT_ARRAY:
            count = int.from_bytes(self.take(4, "strict array count"), "big")
            if count > self.limits.max_items:
                limit = self.limits.max_items
                raise AMF0Error(f"AMF0 strict array of {count} elements exceeds the {limit} limit")
            if count > len(self.data) - self.pos:  # every element takes at least one byte
                raise AMF0Error(f"AMF0 data truncated in strict array of {count} elements")
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            millis, tz = _DATE.unpack(self.take(10, "date"))
            return Date(millis, tz)
        if marker == LONG_STRING:
            return self.long_string("long string")
        if marker == XML_DOCUMENT:
            return XMLDocument(self.long_string("XML document"))
        if marker == TYPED_OBJECT:
            class_name = self.short_string("typed object class name")
            return TypedObject(class_name, self.properties(depth))
        if marker == REFERENCE:
            raise AMF0Error("AMF0 reference (0x07) is not supported")
        if marker == OBJECT_END:
            raise AMF0Error(f"AMF0 object-end marker outside an object at offset {self.pos - 1}")
        name = _UNSUPPORTED_NAMES.get(marker)
        if name is not None:
            raise AMF0Error(f"AMF0 type {name} is not supported")
        raise AMF0Error(f"unknown AMF0 type marker 0x{marker:02x} at offset {self.pos - 1}")


def decode_all(data: bytes, limits: AMF0Limits | None = None) -> list[Any]:
    """Decode every AMF0 value in ``data``; raises :class:`AMF0Error` on anything malformed."""
    dec = _Decoder(bytes(data), limits or AMF0Limits())
    out = []
    while dec.pos < len(dec.data):
        out.append(dec.value())
    return out


def decode_one(data: bytes, limits: AMF0Limits | None = None) -> tuple[Any, int]:
    """Decode the first value of ``data``; return it and the number of bytes it took."""
    dec = _Decoder(bytes(data), limits or AMF0Limits())
    return dec.value(), dec.pos


def encode(*values: Any) -> bytes:
    """Encode values as AMF0; ``TypeError`` for Python types with no AMF0 mapping."""
    out = bytearray()
    for v in values:
        _encode(out, v)
    return bytes(out)


def _encode_key(out: bytearray, key: str) -> None:
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 property names are at most 65535 bytes")
    out += len(raw).to_bytes(2, "big") + raw


def _encode_properties(out: bytearray, props: dict[str, Any]) -> None:
    for key, value in props.items():
        if not isinstance(key, str):
            raise TypeError(f"AMF0 property names must be str, not {type(key).__name__}")
        _encode_key(out, key)
        _encode(out, value)
    out += b"\x00\x00\x09"


def _encode(out: bytearray, v: Any) -> None:
    if v is None:
        out.append(NULL)
    elif v is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(v, bool):
        out += bytes((BOOLEAN, int(v)))
    elif isinstance(v, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(v))
    elif isinstance(v, XMLDocument):
        raw = v.encode("utf-8")
        out.append(XML_DOCUMENT)
        out += len(raw).to_bytes(4, "big") + raw
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += len(raw).to_bytes(2, "big") + raw
        else:
            out.append(LONG_STRING)
            out += len(raw).to_bytes(4, "big") + raw
    elif isinstance(v, ECMAArray):
        out.append(ECMA_ARRAY)
        out += len(v).to_bytes(4, "big")
        _encode_properties(out, v)
    elif isinstance(v, dict):
        out.append(OBJECT)
        _encode_properties(out, v)
    elif isinstance(v, list | tuple):
        out.append(STRICT_ARRAY)
        out += len(v).to_bytes(4, "big")
        for item in v:
            _encode(out, item)
    elif isinstance(v, Date):
        out.append(DATE)
        out += _DATE.pack(v.millis, v.timezone)
    elif isinstance(v, TypedObject):
        out.append(TYPED_OBJECT)
        _encode_key(out, v.class_name)
        _encode_properties(out, v.properties)
    else:
        raise TypeError(f"no AMF0 encoding for {type(v).__name__}")
