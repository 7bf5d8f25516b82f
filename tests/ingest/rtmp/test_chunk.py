"""RTMP chunk stream reader (spec §5.3, §5.4): every case runs on the reference and the Cython twin.

The ``chunk_reader_cls`` fixture (``conftest.py``) yields ``py-reader`` and ``c-reader``; the tests
that compare the two take both classes directly.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.media import MediaUnit
from ingest.rtmp import flv
from ingest.rtmp.chunk_py import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    ChunkMessage,
    ChunkWriter,
)
from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader
from ingest.rtmp.errors import ChunkStreamError

try:
    from native.chunk_reader import ChunkStreamReader as CChunkStreamReader
except ImportError:
    CChunkStreamReader = None

needs_native = pytest.mark.skipif(CChunkStreamReader is None, reason="native twin not built")

Result = tuple[list[ChunkMessage], str | None]


# -- helpers -------------------------------------------------------------------------------------


def basic_header(fmt: int, csid: int, size: int | None = None) -> bytes:
    """Basic header in its shortest form, or forced to ``size`` bytes (§5.3.1.1)."""
    size = size or (1 if csid < 64 else 2 if csid < 320 else 3)
    if size == 1:
        return bytes(((fmt << 6) | csid,))
    if size == 2:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


def chunk(
    fmt: int,
    csid: int,
    payload: bytes = b"",
    *,
    ts: int = 0,
    length: int | None = None,
    type_id: int = 9,
    stream_id: int = 1,
    ext: int | None = None,
) -> bytes:
    """One chunk with a hand-built header; ``ext`` appends an extended timestamp."""
    out = bytearray(basic_header(fmt, csid))
    if fmt <= 2:
        out += ts.to_bytes(3, "big")
    if fmt <= 1:
        out += (len(payload) if length is None else length).to_bytes(3, "big")
        out.append(type_id)
    if fmt == 0:
        out += stream_id.to_bytes(4, "little")
    if ext is not None:
        out += ext.to_bytes(4, "big")
    return bytes(out) + payload


def control(type_id: int, value: int, *, csid: int = 2) -> bytes:
    """A protocol control message with a 4-byte payload (Set Chunk Size, Abort)."""
    return chunk(0, csid, value.to_bytes(4, "big"), type_id=type_id, stream_id=0)


def set_chunk_size(size: int) -> bytes:
    return control(1, size)


def read(cls: type, pieces: Iterable[bytes], **bounds: int) -> Result:
    """Feed ``pieces``, draining messages after each; stop at the first ChunkStreamError."""
    reader = cls(**bounds)
    out: list[ChunkMessage] = []
    try:
        for piece in pieces:
            reader.feed(piece)
            while (msg := reader.next_message()) is not None:
                out.append(msg)
    except ChunkStreamError as exc:
        return out, str(exc)
    return out, None


def read_all(cls: type, data: bytes, **bounds: int) -> list[ChunkMessage]:
    messages, error = read(cls, [data], **bounds)
    assert error is None, error
    return messages


def random_splits(data: bytes, rnd: random.Random, max_piece: int = 300) -> list[bytes]:
    pieces, pos = [], 0
    while pos < len(data):
        step = rnd.randint(0, max_piece)  # empty feeds included
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- headers -------------------------------------------------------------------------------------


def test_message_types_and_defaults(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls()
    assert reader.chunk_size == DEFAULT_CHUNK_SIZE == 128
    assert reader.max_chunk_size == MAX_CHUNK_SIZE
    assert reader.max_message_size == 8 << 20
    assert reader.max_buffered == 16 << 20
    assert reader.max_chunk_streams == 64
    assert reader.buffered == 0
    assert reader.next_message() is None
    custom = chunk_reader_cls(
        max_chunk_size=4096, max_message_size=1000, max_buffered=2000, max_chunk_streams=3
    )
    assert (custom.max_chunk_size, custom.max_message_size) == (4096, 1000)
    assert (custom.max_buffered, custom.max_chunk_streams) == (2000, 3)
    reader.feed(chunk(0, 3, b"abc", ts=7, type_id=20, stream_id=0x01020304))
    msg = reader.next_message()
    assert type(msg) is ChunkMessage
    assert msg == ChunkMessage(3, 20, 0x01020304, 7, b"abc")
    assert isinstance(msg.payload, bytes)


def test_fmt_0_1_2_3_headers(chunk_reader_cls: type) -> None:
    data = (
        chunk(0, 4, b"a" * 10, ts=1000, type_id=9, stream_id=1)
        + chunk(1, 4, b"b" * 5, ts=33, type_id=8)  # new length and type, delta 33
        + chunk(2, 4, b"c" * 5, ts=40)  # same length and type, delta 40
        + chunk(3, 4, b"d" * 5)  # everything repeated, delta 40 again
    )
    assert read_all(chunk_reader_cls, data) == [
        ChunkMessage(4, 9, 1, 1000, b"a" * 10),
        ChunkMessage(4, 8, 1, 1033, b"b" * 5),
        ChunkMessage(4, 8, 1, 1073, b"c" * 5),
        ChunkMessage(4, 8, 1, 1113, b"d" * 5),
    ]


def test_type3_after_type0_uses_its_timestamp_as_delta(chunk_reader_cls: type) -> None:
    # §5.3.1.2.4: a type-3 new message after a type-0 one adds the type-0 timestamp.
    data = chunk(0, 5, b"x", ts=20) + chunk(3, 5, b"y") + chunk(3, 5, b"z")
    assert [m.timestamp for m in read_all(chunk_reader_cls, data)] == [20, 40, 60]


def test_fmt1_keeps_stream_id(chunk_reader_cls: type) -> None:
    data = chunk(0, 6, b"x", stream_id=7) + chunk(1, 6, b"yy", ts=1, type_id=18)
    assert read_all(chunk_reader_cls, data)[1] == ChunkMessage(6, 18, 7, 1, b"yy")


@pytest.mark.parametrize("csid", [2, 3, 63, 64, 319, 320, 65599])
def test_basic_header_sizes(chunk_reader_cls: type, csid: int) -> None:
    writer = ChunkWriter()
    data = writer.write(csid, 9, 1, 5, b"p" * 300)
    size = 1 if csid < 64 else 2 if csid < 320 else 3
    assert data[:size] == basic_header(0, csid)
    assert read_all(chunk_reader_cls, data) == [ChunkMessage(csid, 9, 1, 5, b"p" * 300)]


@pytest.mark.parametrize("csid", [64, 200, 319])
def test_3_byte_form_of_a_2_byte_csid_is_the_same_stream(chunk_reader_cls: type, csid: int) -> None:
    start = chunk(0, csid, b"a" * 128, length=200)
    cont = basic_header(3, csid, 3) + b"b" * 72
    assert read_all(chunk_reader_cls, start + cont) == [
        ChunkMessage(csid, 9, 1, 0, b"a" * 128 + b"b" * 72)
    ]


# -- timestamps ----------------------------------------------------------------------------------


def test_extended_timestamp_on_continuation_chunks(chunk_reader_cls: type) -> None:
    writer = ChunkWriter()
    payload = bytes(range(256)) * 2
    data = writer.write(4, 9, 1, 0x12345678, payload)
    # Every type-3 continuation repeats the 4-byte extended timestamp (§5.3.1.3).
    assert data.count(bytes.fromhex("12345678")) == 4
    assert read_all(chunk_reader_cls, data) == [ChunkMessage(4, 9, 1, 0x12345678, payload)]


def test_timestamp_ffffff_is_extended(chunk_reader_cls: type) -> None:
    data = chunk(0, 4, b"x", ts=0xFFFFFF, ext=0xFFFFFF) + chunk(0, 4, b"y", ts=0xFFFFFE)
    assert [m.timestamp for m in read_all(chunk_reader_cls, data)] == [0xFFFFFF, 0xFFFFFE]


def test_extended_delta_and_type3_new_message(chunk_reader_cls: type) -> None:
    data = (
        chunk(0, 4, b"a", ts=10)
        + chunk(2, 4, b"b", ts=0xFFFFFF, ext=0x01000000)  # extended delta
        # A type-3 new message repeats the extended field; the delta (not the field) is added.
        + chunk(3, 4, b"c", ext=0x01000000)
        + chunk(2, 4, b"d", ts=5)  # back to a plain delta: type-3 chunks lose the extension
        + chunk(3, 4, b"e")
    )
    assert [m.timestamp for m in read_all(chunk_reader_cls, data)] == [
        10,
        10 + 0x01000000,
        10 + 0x02000000,
        15 + 0x02000000,
        20 + 0x02000000,
    ]


def test_extended_type3_new_message_spanning_chunks(chunk_reader_cls: type) -> None:
    data = (
        chunk(0, 4, b"a" * 128, ts=0xFFFFFF, ext=0x10000000, length=130)
        + chunk(3, 4, b"a" * 2, ext=0x10000000)
        + chunk(3, 4, b"b" * 128, ext=0x10000000)  # second message: timestamp doubles
        + chunk(3, 4, b"b" * 2, ext=0x10000000)
    )
    assert read_all(chunk_reader_cls, data) == [
        ChunkMessage(4, 9, 1, 0x10000000, b"a" * 130),
        ChunkMessage(4, 9, 1, 0x20000000, b"b" * 130),
    ]


def test_timestamp_wraps_at_32_bits(chunk_reader_cls: type) -> None:
    data = (
        chunk(0, 4, b"a", ts=0xFFFFFF, ext=0xFFFFFFF0)
        + chunk(1, 4, b"b", ts=0x20)
        + chunk(3, 4, b"c")
        + chunk(2, 4, b"d", ts=0xFFFFFF, ext=0xFFFFFFFF)  # delta of -1 modulo 2**32
    )
    assert [m.timestamp for m in read_all(chunk_reader_cls, data)] == [
        0xFFFFFFF0,
        0x10,
        0x30,
        0x2F,
    ]


def test_writer_round_trips_wrapped_timestamp(chunk_reader_cls: type) -> None:
    data = ChunkWriter().write(3, 8, 1, (1 << 32) + 5, b"q")
    assert read_all(chunk_reader_cls, data) == [ChunkMessage(3, 8, 1, 5, b"q")]


# -- chunk size, abort, interleaving -------------------------------------------------------------


def test_set_chunk_size_1(chunk_reader_cls: type) -> None:
    writer = ChunkWriter()
    data = writer.write(2, 1, 0, 0, (1).to_bytes(4, "big"))
    writer.chunk_size = 1
    data += writer.write(4, 9, 1, 3, b"0123456789")
    reader = chunk_reader_cls()
    reader.feed(data)
    assert reader.next_message() == ChunkMessage(2, 1, 0, 0, b"\x00\x00\x00\x01")
    assert reader.chunk_size == 1
    assert reader.next_message() == ChunkMessage(4, 9, 1, 3, b"0123456789")
    assert reader.next_message() is None
    assert reader.buffered == 0


def test_set_chunk_size_65536_and_high_bit_ignored(chunk_reader_cls: type) -> None:
    writer = ChunkWriter()
    payload = random.Random(1).randbytes(100_000)
    data = set_chunk_size(0x80000000 | 65536)  # §5.4.1: bit 31 must be 0; it is masked off
    writer.chunk_size = 65536
    data += writer.write(6, 9, 1, 0, payload)
    messages = read_all(chunk_reader_cls, data)
    assert messages[1] == ChunkMessage(6, 9, 1, 0, payload)
    for pieces in (random_splits(data, random.Random(2), 20_000), [data[:-1], data[-1:]]):
        assert read(chunk_reader_cls, pieces) == (messages, None)


def test_set_chunk_size_applies_mid_message_of_another_stream(chunk_reader_cls: type) -> None:
    data = (
        chunk(0, 4, b"a" * 128, length=300)
        + set_chunk_size(200)
        + chunk(3, 4, b"b" * 172)  # the remaining 172 bytes fit one chunk at the new size
    )
    messages = read_all(chunk_reader_cls, data)
    assert messages[1] == ChunkMessage(4, 9, 1, 0, b"a" * 128 + b"b" * 172)


@pytest.mark.parametrize(
    ("size", "bounds", "match"),
    [
        (0, {}, "Set Chunk Size 0 outside 1..16777215"),
        (0x80000000, {}, "Set Chunk Size 0 outside 1..16777215"),
        (0x1000000, {}, "Set Chunk Size 16777216 outside 1..16777215"),
        (4097, {"max_chunk_size": 4096}, "Set Chunk Size 4097 outside 1..4096"),
    ],
)
def test_set_chunk_size_out_of_range(
    chunk_reader_cls: type, size: int, bounds: dict[str, int], match: str
) -> None:
    reader = chunk_reader_cls(**bounds)
    reader.feed(set_chunk_size(size))
    with pytest.raises(ChunkStreamError, match=f"^{match}$"):
        reader.next_message()
    assert reader.chunk_size == 128


def test_set_chunk_size_at_max_accepted(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls(max_chunk_size=4096)
    reader.feed(set_chunk_size(4096))
    reader.next_message()
    assert reader.chunk_size == 4096


@pytest.mark.parametrize(
    ("type_id", "match"),
    [(1, "Set Chunk Size payload is not 4 bytes"), (2, "Abort Message payload is not 4 bytes")],
)
@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x01", b"\x00\x00\x00\x80\x00"])
def test_control_payload_size(
    chunk_reader_cls: type, type_id: int, match: str, payload: bytes
) -> None:
    reader = chunk_reader_cls()
    reader.feed(chunk(0, 2, payload, type_id=type_id, stream_id=0))
    with pytest.raises(ChunkStreamError, match=f"^{match}$"):
        reader.next_message()


def test_abort_discards_partial_message(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls()
    reader.feed(chunk(0, 4, b"a" * 128, length=300))
    assert reader.next_message() is None
    assert reader.buffered == 128
    reader.feed(control(2, 4))
    assert reader.next_message() == ChunkMessage(2, 2, 0, 0, b"\x00\x00\x00\x04")
    assert reader.buffered == 0
    # The stream is idle again: a type-0 header starts a fresh message.
    reader.feed(chunk(0, 4, b"fresh", ts=9))
    assert reader.next_message() == ChunkMessage(4, 9, 1, 9, b"fresh")
    assert reader.buffered == 0


def test_abort_then_type3_starts_new_message_from_last_header(chunk_reader_cls: type) -> None:
    data = chunk(0, 4, b"a" * 128, ts=10, length=130) + control(2, 4) + chunk(3, 4, b"b" * 128)
    data += chunk(3, 4, b"b" * 2)
    assert read_all(chunk_reader_cls, data) == [
        ChunkMessage(2, 2, 0, 0, b"\x00\x00\x00\x04"),
        ChunkMessage(4, 9, 1, 20, b"b" * 130),
    ]


@pytest.mark.parametrize("target", [3, 4, 300, 65599, 0xFFFFFFFF])
def test_abort_of_idle_or_unknown_stream_is_ignored(chunk_reader_cls: type, target: int) -> None:
    data = chunk(0, 3, b"done") + chunk(0, 5, b"a" * 128, length=129) + control(2, target)
    data += chunk(3, 5, b"b")
    messages = read_all(chunk_reader_cls, data)
    assert messages[-1] == ChunkMessage(5, 9, 1, 0, b"a" * 128 + b"b")


def test_abort_on_large_csid(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls()
    reader.feed(chunk(0, 1000, b"a" * 128, length=200) + control(2, 1000))
    assert reader.next_message().type_id == 2
    assert reader.buffered == 0


def test_interleaved_chunk_streams(chunk_reader_cls: type) -> None:
    video, audio = b"v" * 300, b"A" * 200
    data = (
        chunk(0, 6, video[:128], ts=100, length=300, type_id=9)
        + chunk(0, 4, audio[:128], ts=90, length=200, type_id=8)
        + chunk(3, 6, video[128:256])
        + chunk(3, 4, audio[128:])  # audio completes first
        + chunk(3, 6, video[256:])
    )
    reader = chunk_reader_cls()
    reader.feed(data[:-44])
    assert reader.next_message() == ChunkMessage(4, 8, 1, 90, audio)
    assert reader.next_message() is None
    assert reader.buffered == 256 + 1  # video's 256 bytes and the last chunk's basic header
    reader.feed(data[-44:])
    assert reader.next_message() == ChunkMessage(6, 9, 1, 100, video)
    assert reader.buffered == 0


def test_zero_length_message(chunk_reader_cls: type) -> None:
    data = (
        chunk(0, 3, b"", ts=5, type_id=18) + chunk(3, 3, b"") + chunk(1, 3, b"z", ts=1, type_id=18)
    )
    assert read_all(chunk_reader_cls, data) == [
        ChunkMessage(3, 18, 1, 5, b""),
        ChunkMessage(3, 18, 1, 10, b""),
        ChunkMessage(3, 18, 1, 11, b"z"),
    ]


def test_buffered_counts_unparsed_and_partial(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls()
    data = chunk(0, 4, b"a" * 128, length=256) + chunk(3, 4, b"b" * 128)
    reader.feed(data[:5])
    assert reader.next_message() is None
    assert reader.buffered == 5
    reader.feed(data[5:150])
    assert reader.next_message() is None
    assert reader.buffered == 128 + (150 - 140)
    reader.feed(data[150:])
    assert reader.next_message() == ChunkMessage(4, 9, 1, 0, b"a" * 128 + b"b" * 128)
    assert reader.buffered == 0


def test_feed_accepts_bytes_like(chunk_reader_cls: type) -> None:
    data = chunk(0, 3, b"xyz")
    for piece in (bytearray(data), memoryview(data)):
        reader = chunk_reader_cls()
        reader.feed(piece)
        assert reader.next_message() == ChunkMessage(3, 9, 1, 0, b"xyz")


# -- bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_stream_must_start_with_type0(chunk_reader_cls: type, fmt: int) -> None:
    reader = chunk_reader_cls()
    reader.feed(chunk(0, 3, b"ok") + chunk(fmt, 330, b"x"))
    assert reader.next_message() is not None
    with pytest.raises(
        ChunkStreamError, match=f"^chunk stream 330 starts with a type-{fmt} header$"
    ):
        reader.next_message()


def test_too_many_chunk_streams(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls(max_chunk_streams=2)
    reader.feed(chunk(0, 3, b"a") + chunk(0, 400, b"b") + chunk(0, 3, b"c") + chunk(0, 5, b"d"))
    assert [reader.next_message().payload for _ in range(3)] == [b"a", b"b", b"c"]
    with pytest.raises(ChunkStreamError, match=r"^more than 2 chunk streams$"):
        reader.next_message()


@pytest.mark.parametrize("fmt", [0, 1, 2])
def test_new_header_before_message_completed(chunk_reader_cls: type, fmt: int) -> None:
    reader = chunk_reader_cls()
    reader.feed(chunk(0, 4, b"a" * 128, length=200) + chunk(fmt, 4, b"b" * 72))
    with pytest.raises(
        ChunkStreamError,
        match=f"^type-{fmt} header on chunk stream 4 before its message completed$",
    ):
        reader.next_message()


@pytest.mark.parametrize("fmt", [0, 1])
def test_message_size_limit(chunk_reader_cls: type, fmt: int) -> None:
    reader = chunk_reader_cls(max_message_size=100)
    data = chunk(0, 4, b"x" * 100)
    # Rejected as soon as the header is complete, before any payload arrives.
    data += chunk(fmt, 4, ts=1, length=101)
    reader.feed(data)
    assert len(reader.next_message().payload) == 100
    with pytest.raises(
        ChunkStreamError, match=r"^message of 101 bytes exceeds the 100-byte limit$"
    ):
        reader.next_message()


def test_message_size_limit_on_type3_new_message(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls(max_message_size=100)
    reader.feed(chunk(0, 4, b"x" * 100) + basic_header(3, 4))
    reader.next_message()
    reader.max_message_size = 99  # the bound is read on every new message
    with pytest.raises(ChunkStreamError, match=r"^message of 100 bytes exceeds the 99-byte limit$"):
        reader.next_message()


def test_unparsed_bytes_limit(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls(max_buffered=1000)
    # The bound allows one maximal chunk (chunk size + 18 header bytes) beyond max_buffered.
    reader.feed(b"\x03" * (1000 + 128 + 18 - 10))
    reader.feed(b"\x03" * 10)
    with pytest.raises(ChunkStreamError, match=r"^more than 1000 unparsed bytes buffered$"):
        reader.feed(b"\x03")


def test_unparsed_limit_follows_chunk_size(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls(max_buffered=1000)
    reader.feed(set_chunk_size(4000))
    reader.next_message()
    reader.feed(b"\x03" * (1000 + 4000 + 18))
    with pytest.raises(ChunkStreamError, match=r"^more than 1000 unparsed bytes buffered$"):
        reader.feed(b"\x03")


def test_unfinished_messages_limit(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls(max_buffered=1000, max_message_size=5000)
    data = chunk(0, 4, b"a" * 128, length=5000) + chunk(0, 5, b"b" * 128, length=5000)
    data += b"".join(chunk(3, 4 + i % 2, b"c" * 128) for i in range(6))
    reader.feed(data[:900])
    assert reader.next_message() is None
    reader.feed(data[900:])
    with pytest.raises(
        ChunkStreamError, match=r"^more than 1000 bytes held in unfinished messages$"
    ):
        reader.next_message()


def test_many_large_announced_messages_stay_within_bounds(chunk_reader_cls: type) -> None:
    # 64 streams each announcing a maximal message and sending one chunk: accepted, while the
    # bytes actually held stay small (the twin must not reserve 64 × 8 MiB up front).
    reader = chunk_reader_cls(max_buffered=1 << 20)
    for csid in range(3, 3 + 64):
        reader.feed(chunk(0, csid, b"z" * 128, length=8 << 20))
        assert reader.next_message() is None
    assert reader.buffered == 64 * 128


def test_messages_announced_beyond_max_buffered_still_complete(chunk_reader_cls: type) -> None:
    # Together the two announced lengths exceed max_buffered, though the bytes held never do
    # (the twin grows the second payload instead of reserving it whole).
    first, second = b"A" * 6000, random.Random(3).randbytes(9000)
    writer = ChunkWriter()
    data = writer.write(4, 9, 1, 0, first)
    head = len(chunk(0, 4, first[:128], length=6000))
    data = data[:head] + writer.write(6, 8, 1, 0, second) + data[head:]
    expected = [ChunkMessage(6, 8, 1, 0, second), ChunkMessage(4, 9, 1, 0, first)]
    pieces = random_splits(data, random.Random(4), 700)
    assert read(chunk_reader_cls, pieces, max_buffered=10_000) == (expected, None)


# -- splitting -----------------------------------------------------------------------------------


def mixed_stream() -> bytes:
    """A stream touching every feature: all header types and sizes, extended timestamps, Set
    Chunk Size both ways, Abort, interleaving and empty messages."""
    writer = ChunkWriter()
    rnd = random.Random(7)
    out = bytearray()
    out += writer.write(2, 1, 0, 0, (1).to_bytes(4, "big"))
    writer.chunk_size = 1
    out += writer.write(3, 20, 0, 0, b"connect")  # seven 1-byte chunks
    out += writer.write(2, 1, 0, 0, (4096).to_bytes(4, "big"))
    writer.chunk_size = 4096
    out += writer.write(320, 9, 1, 0x01000000, rnd.randbytes(10_000))
    out += writer.write(65599, 8, 1, 5, b"")
    out += chunk(0, 64, b"a" * 4096, ts=0xFFFFFF, ext=0xFFFFFFF0, length=5000)
    out += chunk(0, 319, b"i" * 10, ts=3)
    out += chunk(3, 64, b"b" * 904, ext=0xFFFFFFF0)
    out += chunk(1, 64, b"c" * 50, ts=0x20)
    out += chunk(2, 319, b"j" * 10, ts=4)
    out += chunk(3, 319, b"k" * 10)
    out += chunk(0, 5, b"p" * 4096, length=6000) + control(2, 5) + chunk(0, 5, b"q", ts=1)
    out += writer.write(2, 1, 0, 0, (128).to_bytes(4, "big"))
    writer.chunk_size = 128
    out += writer.write(6, 9, 1, 0x7FFFFFFF, rnd.randbytes(1000))
    out += writer.write(4, 8, 1, 0xFFFFFFFF, rnd.randbytes(129))
    return bytes(out)


def test_feed_whole_bytewise_and_random_splits_agree(chunk_reader_cls: type) -> None:
    data = mixed_stream()
    whole = read_all(chunk_reader_cls, data)
    assert len(whole) == 15
    assert read(chunk_reader_cls, one_byte_at_a_time(data)) == (whole, None)
    for seed in range(20):
        pieces = random_splits(data, random.Random(seed), max_piece=rnd_piece(seed))
        assert read(chunk_reader_cls, pieces) == (whole, None)


def rnd_piece(seed: int) -> int:
    return (5, 50, 500, 5000)[seed % 4]


def test_trailing_partial_chunk_waits(chunk_reader_cls: type) -> None:
    data = mixed_stream()
    for cut in range(1, 40):
        messages, error = read(chunk_reader_cls, [data[:-cut]])
        assert error is None
        assert messages == read_all(chunk_reader_cls, data)[: len(messages)]


# -- property tests ------------------------------------------------------------------------------

CSIDS = st.one_of(st.integers(3, 10), st.sampled_from([63, 64, 65, 319, 320, 321, 65599]))
MESSAGE = st.tuples(
    CSIDS,
    st.integers(3, 255),  # type ids 1 and 2 would be applied as control messages
    st.integers(0, 0xFFFFFFFF),
    st.one_of(st.integers(0, 0x1000), st.integers(0xFFFFF0, 0x100000F), st.integers(0, 2**32 - 1)),
    st.binary(max_size=600),
)
STEP = st.one_of(MESSAGE, st.integers(1, 700))  # an int changes the chunk size


def writer_stream(steps: list) -> tuple[bytes, list[ChunkMessage]]:
    writer = ChunkWriter()
    data, expected = bytearray(), []
    for step in steps:
        if isinstance(step, int):
            payload = step.to_bytes(4, "big")
            data += writer.write(2, 1, 0, 0, payload)
            expected.append(ChunkMessage(2, 1, 0, 0, payload))
            writer.chunk_size = step
        else:
            csid, type_id, stream_id, ts, payload = step
            data += writer.write(csid, type_id, stream_id, ts, payload)
            expected.append(ChunkMessage(csid, type_id, stream_id, ts, payload))
    return bytes(data), expected


def readers() -> list[type]:
    return [PyChunkStreamReader] + ([CChunkStreamReader] if CChunkStreamReader else [])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=25), seed=st.integers(0, 2**32))
def test_writer_round_trip(steps: list, seed: int) -> None:
    data, expected = writer_stream(steps)
    pieces = random_splits(data, random.Random(seed), max_piece=1 + seed % 2000)
    for cls in readers():
        assert read(cls, [data]) == (expected, None)
        assert read(cls, pieces) == (expected, None)


BOUNDS = {"max_message_size": 3000, "max_buffered": 4000, "max_chunk_streams": 4}


def fuzz_input() -> st.SearchStrategy[bytes]:
    """Random bytes, and valid streams with a few bytes flipped, cut or inserted."""

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(writer_stream(draw(st.lists(STEP, max_size=8)))[0])
        for _ in range(draw(st.integers(1, 6))):
            if not data:
                break
            pos = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip":
                data[pos] = draw(st.integers(0, 255))
            elif action == "cut":
                del data[pos : pos + draw(st.integers(1, 20))]
            else:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        return bytes(data)

    return st.one_of(st.binary(max_size=2000), mutated())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=fuzz_input(), seed=st.integers(0, 2**32))
def test_garbage_parses_or_raises_chunk_stream_error_alike(data: bytes, seed: int) -> None:
    pieces = random_splits(data, random.Random(seed), max_piece=1 + seed % 700)
    results = []
    for cls in readers():
        whole = read(cls, [data], **BOUNDS)
        split = read(cls, pieces, **BOUNDS)
        # Only the unparsed-bytes bound depends on how the input is split.
        if "unparsed" not in f"{whole[1]} {split[1]}":
            assert whole == split
        results.append((whole, split))
    assert all(result == results[0] for result in results)


# -- the build -----------------------------------------------------------------------------------


def test_native_twin_is_built_unless_disabled() -> None:
    """Under ``make test`` the extension is built: a broken build must fail here, not skip."""
    from ingest.rtmp import chunk

    if os.environ.get("SHOPCAST_NO_EXTENSIONS"):
        assert chunk.ChunkStreamReader is PyChunkStreamReader
        assert not chunk.NATIVE
        return
    module = importlib.import_module("native.chunk_reader")  # raises if the build is broken
    assert chunk.ChunkStreamReader is module.ChunkStreamReader
    assert chunk.NATIVE


@needs_native
def test_native_rejects_chunk_size_below_1() -> None:
    # The reference accepts any value; the twin refuses one that would make it copy a negative
    # length.
    reader = CChunkStreamReader()
    with pytest.raises(ValueError, match="chunk size 0 is below 1"):
        reader.chunk_size = 0
    reader.chunk_size = 1
    assert reader.chunk_size == 1


# -- read_media: a publisher's media in one call per read -----------------------------------------


def _media_stream() -> tuple[bytes, list[tuple[str, object]]]:
    """Chunk bytes of a mixed publish and what read_media must make of them, in order."""
    w = ChunkWriter()
    out = bytearray()
    expected: list[tuple[str, object]] = []

    def send(type_id: int, stream_id: int, ts: int, body: bytes, csid: int = 6) -> None:
        out.extend(w.write(csid, type_id, stream_id, ts, body))

    send(9, 1, 0, flv.avc_sequence_header_body(b"\x01avcc"))
    expected.append(("unit", (0, True, b"\x01avcc")))
    send(9, 1, 33, flv.avc_video_body(b"k" * 300, True, 66))  # cut into 128-byte chunks
    expected.append(("unit", (33, False, b"k" * 300)))
    send(8, 1, 40, flv.aac_audio_body(b"aac"), csid=4)
    expected.append(("unit", (40, False, b"aac")))
    send(9, 1, 50, b"\x17\x02\x00\x00\x00")  # end of sequence: no unit
    send(1, 0, 0, (1000).to_bytes(4, "big"), csid=2)  # Set Chunk Size: returned, and applied
    expected.append(("message", (1, 0)))
    w.chunk_size = 1000
    send(18, 1, 60, b"\x02\x00\x0aonMetaData", csid=4)  # data: returned
    expected.append(("message", (18, 1)))
    send(9, 2, 70, flv.avc_video_body(b"x", False))  # another message stream: returned
    expected.append(("message", (9, 2)))
    send(9, 1, 0xFFFFFFF0, flv.avc_video_body(b"wrap" * 100, False))  # one chunk now
    expected.append(("unit", (-16, False, b"wrap" * 100)))  # 66 ms back from 50, unwrapped
    return bytes(out), expected


def _read_media(cls: type, pieces: Iterable[bytes]) -> list[tuple[str, object]]:
    reader = cls()
    unwrapper = flv.TimestampUnwrapper()
    got: list[tuple[str, object]] = []

    def append(unit: MediaUnit) -> None:
        got.append(("unit", (unit.dts, unit.is_config, unit.payload)))

    for piece in pieces:
        reader.feed(piece)
        while True:
            msg = reader.read_media(
                1, append, unwrapper.unwrap, flv.parse_video, flv.parse_audio, 2.5
            )
            if msg is None:
                break
            got.append(("message", (msg.type_id, msg.stream_id)))
    assert reader.buffered == 0
    return got


@pytest.mark.parametrize("cut", ["whole", "random", "bytes"])
def test_read_media_units_and_other_messages_in_order(chunk_reader_cls: type, cut: str) -> None:
    data, expected = _media_stream()
    pieces = {
        "whole": [data],
        "random": random_splits(data, random.Random(7)),
        "bytes": one_byte_at_a_time(data),
    }[cut]
    assert _read_media(chunk_reader_cls, pieces) == expected
    # A message read_media returns has had its control effect: the reader reads on at 1000.
    reader = chunk_reader_cls()
    reader.feed(data)
    while reader.read_media(1, [].append, int, flv.parse_video, flv.parse_audio, 0.0):
        pass
    assert reader.chunk_size == 1000


def test_read_media_passes_parser_errors_on(chunk_reader_cls: type) -> None:
    reader = chunk_reader_cls()
    reader.feed(ChunkWriter().write(6, 9, 1, 0, b"\x14\x00"))  # On2 VP6
    with pytest.raises(flv.UnsupportedMediaError, match="On2 VP6"):
        reader.read_media(1, [].append, int, flv.parse_video, flv.parse_audio, 0.0)
