"""RTMP chunk stream reader and writer (Adobe RTMP 1.0 spec §5.3), pure-Python reference.

``native/chunk_reader.pyx`` is the compiled twin of :class:`ChunkStreamReader`; both must pass
``tests/ingest/rtmp/test_chunk.py``. Pick one through :mod:`ingest.rtmp.chunk`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ingest.media import MediaUnit
from ingest.rtmp.errors import ChunkStreamError
from ingest.rtmp.limits import (
    MAX_BUFFERED,
    MAX_CHUNK_HEADER,
    MAX_CHUNK_SIZE,
    MAX_CHUNK_STREAMS,
    MAX_MESSAGE_SIZE,
)

DEFAULT_CHUNK_SIZE = 128  # §5.4.1: until Set Chunk Size, chunks carry at most 128 bytes
EXTENDED_TIMESTAMP = 0xFFFFFF  # §5.3.1.3: timestamp field value that announces a 4-byte extension
MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
MSG_AUDIO = 8
MSG_VIDEO = 9
#: An FLV tag body parser: (body, dts in ms, arrival) → unit or ``None`` (see ingest.rtmp.flv).
ParseTag = Callable[[bytes, int, float], MediaUnit | None]
_HEADER_SIZE = (11, 7, 3, 0)  # message header length by chunk type (fmt) 0..3, §5.3.1.2
_COMPACT_AT = 1 << 16


class ChunkMessage(NamedTuple):
    """A reassembled RTMP message; ``timestamp`` is the 32-bit wire value (it wraps)."""

    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class _ChunkStream:
    """Per chunk-stream-id state: the last header and the message being reassembled."""

    __slots__ = (
        "buf",
        "delta",
        "extended",
        "length",
        "remaining",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.buf = bytearray()
        self.remaining = 0


class ChunkStreamReader:
    """Reassembles RTMP messages from chunk-stream bytes; applies Set Chunk Size and Abort itself.

    Every bound violation raises :class:`ChunkStreamError`; nothing else escapes.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_buffered: int = MAX_BUFFERED,
        max_chunk_streams: int = MAX_CHUNK_STREAMS,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_chunk_size = max_chunk_size
        self.max_message_size = max_message_size
        self.max_buffered = max_buffered
        self.max_chunk_streams = max_chunk_streams
        self._data = bytearray()
        self._pos = 0
        self._streams: dict[int, _ChunkStream] = {}
        self._partial = 0  # bytes held in unfinished messages across all chunk streams

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed plus bytes of unfinished messages."""
        return len(self._data) - self._pos + self._partial

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._data += data
        if len(self._data) - self._pos > self.max_buffered + self.chunk_size + MAX_CHUNK_HEADER:
            raise ChunkStreamError(f"more than {self.max_buffered} unparsed bytes buffered")

    def next_message(self) -> ChunkMessage | None:
        """Return the next complete message, or ``None`` when more bytes are needed."""
        data = self._data
        while True:
            pos = self._pos
            avail = len(data) - pos
            if avail <= 0:
                break
            b0 = data[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            # §5.3.1.1: basic header of 1, 2 or 3 bytes
            if csid == 0:
                if avail < 2:
                    break
                csid = 64 + data[p]
                p += 1
            elif csid == 1:
                if avail < 3:
                    break
                csid = 64 + data[p] + (data[p + 1] << 8)
                p += 2
            end = p + _HEADER_SIZE[fmt]
            if end > len(data):
                break
            st = self._streams.get(csid)
            if st is None:
                if fmt != 0:
                    raise ChunkStreamError(f"chunk stream {csid} starts with a type-{fmt} header")
                if len(self._streams) >= self.max_chunk_streams:
                    raise ChunkStreamError(f"more than {self.max_chunk_streams} chunk streams")
                st = _ChunkStream()
                self._streams[csid] = st
            continuing = st.remaining > 0
            if continuing and fmt != 3:
                raise ChunkStreamError(
                    f"type-{fmt} header on chunk stream {csid} before its message completed"
                )
            ts_field = 0
            length = st.length
            type_id = st.type_id
            stream_id = st.stream_id
            if fmt <= 2:
                ts_field = (data[p] << 16) | (data[p + 1] << 8) | data[p + 2]
                if fmt <= 1:
                    length = (data[p + 3] << 16) | (data[p + 4] << 8) | data[p + 5]
                    type_id = data[p + 6]
                    if fmt == 0:
                        stream_id = int.from_bytes(data[p + 7 : p + 11], "little")
                extended = ts_field == EXTENDED_TIMESTAMP
            else:
                # §5.3.1.3: type-3 chunks repeat the extended timestamp of their chunk stream
                extended = st.extended
            if extended:
                if end + 4 > len(data):
                    break
                ext = int.from_bytes(data[end : end + 4], "big")
                end += 4
                if fmt <= 2:
                    ts_field = ext
            if continuing:
                take = min(st.remaining, self.chunk_size)
            else:
                if length > self.max_message_size:
                    raise ChunkStreamError(
                        f"message of {length} bytes exceeds the {self.max_message_size}-byte limit"
                    )
                take = min(length, self.chunk_size)
            if end + take > len(data):
                break
            # The whole chunk is here: commit header state.
            if not continuing:
                if fmt == 0:
                    st.timestamp = ts_field
                    st.delta = ts_field  # §5.3.1.2.4: a following type-3 reuses it as the delta
                elif fmt <= 2:
                    st.delta = ts_field
                    st.timestamp = (st.timestamp + ts_field) & 0xFFFFFFFF
                else:
                    st.timestamp = (st.timestamp + st.delta) & 0xFFFFFFFF
                if fmt <= 2:
                    st.extended = extended
                st.length = length
                st.type_id = type_id
                st.stream_id = stream_id
                st.remaining = length
            st.buf += data[end : end + take]
            st.remaining -= take
            self._pos = end + take
            if st.remaining:
                self._partial += take
                if self._partial > self.max_buffered:
                    raise ChunkStreamError(
                        f"more than {self.max_buffered} bytes held in unfinished messages"
                    )
                continue
            self._partial -= len(st.buf) - take
            payload = bytes(st.buf)
            st.buf = bytearray()
            msg = ChunkMessage(csid, st.type_id, st.stream_id, st.timestamp, payload)
            self._control(msg)
            self._compact()
            return msg
        self._compact()
        return None

    def read_media(
        self,
        stream_id: int,
        append: Callable[[MediaUnit], object],
        unwrap: Callable[[int], int],
        parse_video: ParseTag,
        parse_audio: ParseTag,
        arrival: float,
    ) -> ChunkMessage | None:
        """Read messages: each audio (8) or video (9) message on message stream ``stream_id``
        becomes ``parse_audio``/``parse_video(payload, unwrap(timestamp), arrival)``, given to
        ``append`` unless ``None``; return the first other message, or ``None`` when more
        bytes are needed. A publisher's media costs one call per read this way."""
        while (msg := self.next_message()) is not None:
            if msg.type_id not in (MSG_AUDIO, MSG_VIDEO) or msg.stream_id != stream_id:
                return msg
            parse = parse_video if msg.type_id == MSG_VIDEO else parse_audio
            unit = parse(msg.payload, unwrap(msg.timestamp), arrival)
            if unit is not None:
                append(unit)
        return None

    def _control(self, msg: ChunkMessage) -> None:
        """Apply the protocol control messages that change how chunks are read (§5.4.1, §5.4.2)."""
        if msg.type_id == MSG_SET_CHUNK_SIZE:
            if len(msg.payload) != 4:
                raise ChunkStreamError("Set Chunk Size payload is not 4 bytes")
            size = int.from_bytes(msg.payload, "big") & 0x7FFFFFFF
            if size < 1 or size > self.max_chunk_size:
                raise ChunkStreamError(f"Set Chunk Size {size} outside 1..{self.max_chunk_size}")
            self.chunk_size = size
        elif msg.type_id == MSG_ABORT:
            if len(msg.payload) != 4:
                raise ChunkStreamError("Abort Message payload is not 4 bytes")
            st = self._streams.get(int.from_bytes(msg.payload, "big"))
            if st is not None and st.remaining:
                self._partial -= len(st.buf)
                st.buf = bytearray()
                st.remaining = 0

    def _compact(self) -> None:
        if self._pos >= _COMPACT_AT or self._pos == len(self._data):
            del self._data[: self._pos]
            self._pos = 0


class ChunkWriter:
    """Serialises messages into chunks: a type-0 header, then type-3 continuations (§5.3.1)."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def write(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> bytes:
        """Return the chunks of one message."""
        if not 2 <= csid <= 65599:
            raise ValueError(f"chunk stream id {csid} out of range")
        timestamp &= 0xFFFFFFFF
        extended = timestamp >= EXTENDED_TIMESTAMP
        ts_field = EXTENDED_TIMESTAMP if extended else timestamp
        ext = timestamp.to_bytes(4, "big") if extended else b""
        out = bytearray(_basic_header(0, csid))
        out += ts_field.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes((type_id,))
        out += stream_id.to_bytes(4, "little") + ext
        size = self.chunk_size
        out += payload[:size]
        cont = _basic_header(3, csid) + ext
        for off in range(size, len(payload), size):
            out += cont
            out += payload[off : off + size]
        return bytes(out)


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
