# cython: language_level=3
"""Compiled twin of :class:`ingest.rtmp.chunk_py.ChunkStreamReader` (Adobe RTMP 1.0 spec §5.3).

Same behaviour, error messages and public attributes as the reference; both pass
``tests/ingest/rtmp/test_chunk.py``. Chunks are parsed in C, many per call, and each message
payload is one ``bytes`` object filled in place chunk by chunk.

Input is copied as little as possible: a fed ``bytes`` object is kept and parsed where it lies;
only a chunk cut by the end of one feed is copied, together with the start of the next feed
needed to complete it, into a small internal buffer.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_CLEAR, Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy, memmove

from ingest.rtmp.chunk_py import DEFAULT_CHUNK_SIZE, ChunkMessage
from ingest.rtmp.errors import ChunkStreamError
from ingest.rtmp.limits import (
    MAX_BUFFERED,
    MAX_CHUNK_HEADER,
    MAX_CHUNK_SIZE,
    MAX_CHUNK_STREAMS,
    MAX_MESSAGE_SIZE,
)

__all__ = ["ChunkStreamReader"]

cdef extern from "Python.h":
    # The payload is private to the reader until its message completes, so it is written in
    # place through the raw pointer.
    char* _bytes_data "PyBytes_AS_STRING" (PyObject* o)
    object type_alloc "PyType_GenericAlloc" (PyTypeObject* type, Py_ssize_t nitems)

cdef enum:
    EXTENDED_TIMESTAMP = 0xFFFFFF  # §5.3.1.3
    MSG_SET_CHUNK_SIZE = 1
    MSG_ABORT = 2
    MSG_AUDIO = 8
    MSG_VIDEO = 9
    SMALL_CSIDS = 320  # csids of 1- and 2-byte basic headers (2..319) index a table directly
    GROW_FROM = 4096  # first payload allocation when the full length may not be reserved

cdef int[4] HEADER_SIZE = [11, 7, 3, 0]  # message header length by chunk type 0..3, §5.3.1.2
cdef Py_ssize_t CHUNK_HEADER_MAX = MAX_CHUNK_HEADER  # a C constant from the one definition
cdef Py_ssize_t KEEP_BUFFER = 1 << 18  # a drained internal buffer larger than this is freed

# ChunkMessage is a tuple subclass without instance dict: build it the way tuple.__new__ does,
# without the Python-level __new__ call (a third of the per-message cost otherwise).
cdef object MessageType = ChunkMessage
cdef bint FAST_MESSAGE = (
    ChunkMessage.__mro__[1] is tuple
    and ChunkMessage.__basicsize__ == tuple.__basicsize__
    and ChunkMessage.__itemsize__ == tuple.__itemsize__
    and len(ChunkMessage._fields) == 5
)


cdef inline void set_item(object tup, Py_ssize_t i, object item) noexcept:
    Py_INCREF(item)
    PyTuple_SET_ITEM(tup, i, item)  # steals the reference taken above


cdef inline object new_message(
    unsigned int csid, uint8_t type_id, uint32_t stream_id, uint32_t timestamp, object payload
):
    if not FAST_MESSAGE:
        return MessageType(csid, type_id, stream_id, timestamp, payload)
    msg = type_alloc(<PyTypeObject*>MessageType, 5)
    set_item(msg, 0, csid)
    set_item(msg, 1, type_id)
    set_item(msg, 2, stream_id)
    set_item(msg, 3, timestamp)
    set_item(msg, 4, payload)
    return msg


ctypedef struct ChunkStream:
    # Per chunk-stream-id state: the last header and the message being reassembled.
    uint32_t timestamp
    uint32_t delta
    uint32_t length
    uint32_t stream_id
    uint8_t type_id
    bint extended
    Py_ssize_t remaining
    Py_ssize_t filled
    Py_ssize_t capacity
    PyObject* payload  # owned; NULL unless a message with a non-empty payload is in progress


cdef inline uint32_t be24(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 16) | (<uint32_t>p[1] << 8) | p[2]


cdef inline uint32_t be32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef class ChunkStreamReader:
    """Reassembles RTMP messages from chunk-stream bytes; applies Set Chunk Size and Abort itself.

    Every bound violation raises :class:`ChunkStreamError`; nothing else escapes.
    """

    cdef long long _chunk_size
    cdef public long long max_chunk_size
    cdef public long long max_message_size
    cdef public long long max_buffered
    cdef public long long max_chunk_streams

    # Unparsed input is _buf[_start:_end] followed by _held[_hpos:].
    cdef unsigned char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef bytes _held
    cdef Py_ssize_t _hpos
    cdef Py_ssize_t _need  # when parsing stalls: bytes missing to get further

    cdef ChunkStream* _streams
    cdef Py_ssize_t _nstreams
    cdef Py_ssize_t _streams_cap
    cdef int[SMALL_CSIDS] _small  # csid -> index in _streams, -1 when unseen
    cdef dict _large  # csid (320..65599) -> index in _streams
    cdef ChunkStream* _done  # stream whose message the last parse completed
    cdef unsigned int _done_csid
    cdef Py_ssize_t _partial  # bytes held in unfinished messages across all chunk streams
    cdef Py_ssize_t _reserved  # bytes allocated for unfinished payloads

    def __cinit__(self, *args, **kwargs):
        cdef int i
        self._buf = NULL
        self._streams = NULL
        for i in range(SMALL_CSIDS):
            self._small[i] = -1

    def __init__(
        self,
        *,
        max_chunk_size=MAX_CHUNK_SIZE,
        max_message_size=MAX_MESSAGE_SIZE,
        max_buffered=MAX_BUFFERED,
        max_chunk_streams=MAX_CHUNK_STREAMS,
    ):
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self.max_chunk_size = max_chunk_size
        self.max_message_size = max_message_size
        self.max_buffered = max_buffered
        self.max_chunk_streams = max_chunk_streams
        self._large = {}

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._streams is not NULL:
            for i in range(self._nstreams):
                Py_CLEAR(self._streams[i].payload)
            PyMem_Free(self._streams)
            self._streams = NULL
        PyMem_Free(self._buf)
        self._buf = NULL

    @property
    def chunk_size(self):
        """Maximum payload bytes per chunk, as last set by the peer (§5.4.1)."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, long long value):
        # The reference accepts anything; below 1 it misreads the stream, here it would copy a
        # negative length, so refuse it.
        if value < 1:
            raise ValueError(f"chunk size {value} is below 1")
        self._chunk_size = value

    @property
    def buffered(self):
        """Bytes fed but not yet parsed plus bytes of unfinished messages."""
        return self._unparsed() + self._partial

    cdef inline Py_ssize_t _unparsed(self) noexcept:
        cdef Py_ssize_t n = self._end - self._start
        if self._held is not None:
            n += len(self._held) - self._hpos
        return n

    def feed(self, data):
        """Append received bytes."""
        cdef Py_buffer view
        if type(data) is bytes:
            if len(<bytes>data):
                # Keep it and parse it in place; only one held object, so the previous one's
                # unparsed tail (usually part of one chunk) moves to the buffer first.
                self._release_held()
                self._held = <bytes>data
                self._hpos = 0
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                self._release_held()
                self._append(<const unsigned char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
        if self._unparsed() > self.max_buffered + self._chunk_size + CHUNK_HEADER_MAX:
            raise ChunkStreamError(f"more than {self.max_buffered} unparsed bytes buffered")

    cdef int _release_held(self) except -1:
        if self._held is not None:
            self._take_held(len(self._held) - self._hpos)
            self._held = None
            self._hpos = 0
        return 0

    cdef int _take_held(self, Py_ssize_t n) except -1:
        """Move the next ``n`` held bytes to the end of the buffer."""
        self._append(<const unsigned char*>PyBytes_AS_STRING(self._held) + self._hpos, n)
        self._hpos += n
        return 0

    cdef int _append(self, const unsigned char* src, Py_ssize_t n) except -1:
        cdef Py_ssize_t used, cap
        cdef unsigned char* buf
        if n <= 0:
            return 0
        if self._end + n > self._cap:
            used = self._end - self._start
            if used + n <= self._cap:
                memmove(self._buf, self._buf + self._start, used)
            else:
                cap = max(self._cap * 2, used + n, 1024)
                buf = <unsigned char*>PyMem_Malloc(cap)
                if buf is NULL:
                    raise MemoryError()
                if used:
                    memcpy(buf, self._buf + self._start, used)
                PyMem_Free(self._buf)
                self._buf = buf
                self._cap = cap
            self._start = 0
            self._end = used
        memcpy(self._buf + self._end, src, n)
        self._end += n
        return 0

    cdef ChunkStream* _lookup(self, unsigned long csid):
        cdef int idx
        if csid < SMALL_CSIDS:
            idx = self._small[csid]
        elif not self._large:
            return NULL
        else:
            idx = self._large.get(csid, -1)
        if idx < 0:
            return NULL
        return &self._streams[idx]

    cdef ChunkStream* _add_stream(self, unsigned int csid) except NULL:
        cdef Py_ssize_t cap
        cdef ChunkStream* streams
        cdef ChunkStream* st
        if self._nstreams == self._streams_cap:
            cap = max(8, self._streams_cap * 2)
            streams = <ChunkStream*>PyMem_Realloc(self._streams, cap * sizeof(ChunkStream))
            if streams is NULL:
                raise MemoryError()
            self._streams = streams
            self._streams_cap = cap
        st = &self._streams[self._nstreams]
        st.timestamp = 0
        st.delta = 0
        st.length = 0
        st.stream_id = 0
        st.type_id = 0
        st.extended = False
        st.remaining = 0
        st.filled = 0
        st.capacity = 0
        st.payload = NULL
        if csid < SMALL_CSIDS:
            self._small[csid] = <int>self._nstreams
        else:
            self._large[csid] = self._nstreams
        self._nstreams += 1
        return st

    cdef int _reserve(self, ChunkStream* st, Py_ssize_t need) except -1:
        """Make room for ``need`` payload bytes: the full length at once unless announced lengths
        could then hold more than ``max_buffered`` bytes unsent (then grow geometrically)."""
        cdef Py_ssize_t cap
        cdef bytes fresh
        try:
            if st.payload is NULL:
                if self._reserved + <Py_ssize_t>st.length <= self.max_buffered:
                    cap = st.length
                else:
                    cap = min(<Py_ssize_t>st.length, max(need, <Py_ssize_t>GROW_FROM))
                fresh = PyBytes_FromStringAndSize(NULL, cap)
                Py_INCREF(fresh)
                st.payload = <PyObject*>fresh
            else:
                cap = min(<Py_ssize_t>st.length, max(st.capacity * 2, need))
                _PyBytes_Resize(&st.payload, cap)
        except MemoryError:
            # Drop the message so no state points at a missing buffer, then let it propagate.
            self._discard(st)
            raise
        self._reserved += cap - st.capacity
        st.capacity = cap
        return 0

    cdef void _discard(self, ChunkStream* st) noexcept:
        """Forget the message being reassembled on ``st`` (Abort, §5.4.2)."""
        self._partial -= st.filled
        self._reserved -= st.capacity
        Py_CLEAR(st.payload)
        st.filled = 0
        st.capacity = 0
        st.remaining = 0

    cdef bint _parse(self, const unsigned char* d, Py_ssize_t* posp, Py_ssize_t n) except -1:
        """Consume whole chunks of ``d[*posp:n]`` until one completes a message (return True,
        ``_done`` set) or the next is cut short (return False, ``_need`` set). ``*posp`` moves
        past each chunk as it is committed, so it is right even when a bound raises."""
        cdef Py_ssize_t chunk = <Py_ssize_t>self._chunk_size
        cdef Py_ssize_t pos, p, end, avail, take
        cdef unsigned int b0, fmt, csid
        cdef uint32_t ts_field, length, stream_id
        cdef uint8_t type_id
        cdef bint extended, continuing
        cdef ChunkStream* st
        while True:
            pos = posp[0]
            avail = n - pos
            if avail <= 0:
                self._need = 1
                return False
            b0 = d[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            # §5.3.1.1: basic header of 1, 2 or 3 bytes
            if csid == 0:
                if avail < 2:
                    self._need = 2 - avail
                    return False
                csid = 64 + d[p]
                p += 1
            elif csid == 1:
                if avail < 3:
                    self._need = 3 - avail
                    return False
                csid = 64 + d[p] + (<unsigned int>d[p + 1] << 8)
                p += 2
            end = p + HEADER_SIZE[fmt]
            if end > n:
                self._need = end - n
                return False
            st = self._lookup(csid)
            if st is NULL:
                if fmt != 0:
                    raise ChunkStreamError(f"chunk stream {csid} starts with a type-{fmt} header")
                if self._nstreams >= self.max_chunk_streams:
                    raise ChunkStreamError(f"more than {self.max_chunk_streams} chunk streams")
                st = self._add_stream(csid)
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
                ts_field = be24(d + p)
                if fmt <= 1:
                    length = be24(d + p + 3)
                    type_id = d[p + 6]
                    if fmt == 0:
                        stream_id = (
                            d[p + 7]
                            | (<uint32_t>d[p + 8] << 8)
                            | (<uint32_t>d[p + 9] << 16)
                            | (<uint32_t>d[p + 10] << 24)
                        )
                extended = ts_field == EXTENDED_TIMESTAMP
            else:
                # §5.3.1.3: type-3 chunks repeat the extended timestamp of their chunk stream
                extended = st.extended
            if extended:
                if end + 4 > n:
                    self._need = end + 4 - n
                    return False
                if fmt <= 2:
                    ts_field = be32(d + end)
                end += 4
            if continuing:
                take = st.remaining if st.remaining < chunk else chunk
            else:
                if length > self.max_message_size:
                    raise ChunkStreamError(
                        f"message of {length} bytes exceeds the {self.max_message_size}-byte limit"
                    )
                take = length if <Py_ssize_t>length < chunk else chunk
            if end + take > n:
                self._need = end + take - n
                return False
            # The whole chunk is here: commit header state.
            if not continuing:
                if fmt == 0:
                    st.timestamp = ts_field
                    st.delta = ts_field  # §5.3.1.2.4: a following type-3 reuses it as the delta
                elif fmt <= 2:
                    st.delta = ts_field
                    st.timestamp = st.timestamp + ts_field  # uint32 arithmetic wraps like the wire
                else:
                    st.timestamp = st.timestamp + st.delta
                if fmt <= 2:
                    st.extended = extended
                st.length = length
                st.type_id = type_id
                st.stream_id = stream_id
                st.remaining = length
            if take:
                if st.filled + take > st.capacity:
                    self._reserve(st, st.filled + take)
                memcpy(_bytes_data(st.payload) + st.filled, d + end, take)
                st.filled += take
                st.remaining -= take
            posp[0] = end + take
            if st.remaining:
                self._partial += take
                if self._partial > self.max_buffered:
                    raise ChunkStreamError(
                        f"more than {self.max_buffered} bytes held in unfinished messages"
                    )
                continue
            self._partial -= st.filled - take
            self._done = st
            self._done_csid = csid
            return True

    def next_message(self):
        """Return the next complete message, or ``None`` when more bytes are needed."""
        if not self._advance():
            return None
        return self._complete(self._done)

    def read_media(self, stream_id, append, unwrap, parse_video, parse_audio, arrival):
        """Read messages: each audio (8) or video (9) message on message stream ``stream_id``
        becomes ``parse_audio``/``parse_video(payload, unwrap(timestamp), arrival)``, given to
        ``append`` unless ``None``; return the first other message, or ``None`` when more
        bytes are needed. A publisher's media costs one call per read this way."""
        cdef uint32_t sid = stream_id
        cdef ChunkStream* st
        cdef object payload
        while self._advance():
            st = self._done
            if (st.type_id != MSG_AUDIO and st.type_id != MSG_VIDEO) or st.stream_id != sid:
                return self._complete(st)
            payload = self._take_payload(st)
            unit = (parse_video if st.type_id == MSG_VIDEO else parse_audio)(
                payload, unwrap(st.timestamp), arrival
            )
            if unit is not None:
                append(unit)
        return None

    cdef bint _advance(self) except -1:
        """Parse until a message completes (True, ``_done`` set) or more bytes are needed."""
        cdef Py_ssize_t held_len
        cdef bint done = False
        while True:
            held_len = 0 if self._held is None else len(self._held)
            if self._start < self._end:
                done = self._parse(self._buf, &self._start, self._end)
                if done:
                    break
                if self._start == self._end:
                    continue  # the buffer ended on a chunk boundary: go on in the held bytes
                if self._hpos >= held_len:
                    break
                # A chunk is cut at the end of the buffer: complete it from the held bytes, no
                # further, so that parsing then continues in place there.
                self._take_held(min(self._need, held_len - self._hpos))
            elif self._hpos < held_len:
                done = self._parse(
                    <const unsigned char*>PyBytes_AS_STRING(self._held), &self._hpos, held_len
                )
                break
            else:
                break
        self._drained()
        return done

    cdef object _take_payload(self, ChunkStream* st):
        """The completed message's payload, handed over (its buffer is forgotten)."""
        cdef object payload
        if st.payload is NULL:
            payload = b""
        else:
            payload = <object>st.payload  # takes a new reference
            Py_CLEAR(st.payload)
            self._reserved -= st.capacity
        st.filled = 0
        st.capacity = 0
        return payload

    cdef object _complete(self, ChunkStream* st):
        cdef object payload = self._take_payload(st)
        msg = new_message(self._done_csid, st.type_id, st.stream_id, st.timestamp, payload)
        if st.type_id == MSG_SET_CHUNK_SIZE or st.type_id == MSG_ABORT:
            self._control(st.type_id, payload)
        return msg

    cdef int _control(self, uint8_t type_id, bytes payload) except -1:
        """Apply the protocol control messages that change how chunks are read (§5.4.1, §5.4.2)."""
        cdef long long size
        cdef ChunkStream* st
        if type_id == MSG_SET_CHUNK_SIZE:
            if len(payload) != 4:
                raise ChunkStreamError("Set Chunk Size payload is not 4 bytes")
            size = be32(<const unsigned char*>PyBytes_AS_STRING(payload)) & 0x7FFFFFFF
            if size < 1 or size > self.max_chunk_size:
                raise ChunkStreamError(f"Set Chunk Size {size} outside 1..{self.max_chunk_size}")
            self._chunk_size = size
        elif type_id == MSG_ABORT:
            if len(payload) != 4:
                raise ChunkStreamError("Abort Message payload is not 4 bytes")
            st = self._lookup(be32(<const unsigned char*>PyBytes_AS_STRING(payload)))
            if st is not NULL and st.remaining:
                self._discard(st)
        return 0

    cdef inline void _drained(self) noexcept:
        if self._held is not None and self._hpos == len(self._held):
            self._held = None
            self._hpos = 0
        if self._start == self._end:
            # Restart at the front so the next chunk cut in two is copied without moving data.
            self._start = 0
            self._end = 0
            if self._cap > KEEP_BUFFER:
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = 0
