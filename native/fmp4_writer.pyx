# cython: language_level=3
"""Compiled twins of :func:`packager.fmp4.fragment_py` and :func:`packager.fmp4.part_fragment_py`
(ISO/IEC 14496-12 §8.8, ISO/IEC 23000-19).

Same bytes and the same exception types as the references; both pass
``tests/packager/test_fmp4_twin.py``. Pick one through :data:`packager.fmp4.fragment` and
:data:`packager.fmp4.part_fragment`; ``part_fragment`` reads a part's packets directly, so the
cutter makes no ``Sample`` per packet.

One pass reads every sample into a C table (taking a reference to its payload), every size follows
from that table, then the output ``bytes`` is allocated once and written in place: box headers and
the ``trun`` sample table as big-endian stores, payloads with ``memcpy``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_Check
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

import struct

__all__ = ["fragment", "part_fragment"]

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object v, int* overflow) except? -1
    PyTypeObject PyMemberDescr_Type
    PyObject* _PyType_Lookup(PyTypeObject* type, object name)  # borrowed, no error set
    void* GENERIC_GETATTR "((void*)PyObject_GenericGetAttr)"
    ctypedef struct TypeObject "PyTypeObject":  # the fields Cython's PyTypeObject leaves out
        void* tp_getattro
        unsigned int tp_version_tag
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    enum: T_OBJECT_EX

# Values of the reference's constants (packager/fmp4.py); the twin suite compares the bytes.
cdef enum:
    TRUN_FLAGS = 0x000F01  # data offset | sample duration | size | flags | composition offset
    TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
    SYNC_SAMPLE_FLAGS = 0x02000000
    NON_SYNC_SAMPLE_FLAGS = 0x01010000
    MFHD_SIZE = 16  # box header + version/flags + sequence_number
    TRAF_FIXED = 8 + 16 + 20 + 20  # traf header + tfhd + tfdt v1 + trun without its table
    TRUN_ROW = 16  # duration, size, flags, composition offset
    STACK_SAMPLES = 64
    STACK_RUNS = 8

cdef object pack = struct.pack


ctypedef struct Row:
    PyObject* data  # owned reference to the payload, a bytes object
    const char* bytes
    Py_ssize_t size
    uint32_t duration
    uint32_t flags
    int32_t cto


ctypedef struct Run:
    uint32_t track_id
    uint64_t base_dts
    Py_ssize_t first  # index of its first row
    Py_ssize_t count
    Py_ssize_t payload  # bytes of its samples


# -- sample attributes -----------------------------------------------------------------------------
# Sample is a slotted dataclass: its fields are member descriptors, i.e. object pointers at fixed
# offsets in the instance. For that exact type the pointers are read directly (getattr is most of
# the per-sample cost otherwise); the layout is learnt from the type's descriptors and dropped when
# the type changes (tp_version_tag). Any other object goes through getattr.

cdef tuple SAMPLE_FIELDS = ("duration", "data", "keyframe", "cto")

ctypedef struct Layout:
    TypeObject* type  # NULL: nothing learnt
    unsigned int version
    Py_ssize_t offset[4]

cdef Layout sample_layout
sample_layout.type = NULL
cdef object sample_type = None  # keeps the learnt type alive


cdef bint learn_layout(object tp) except -1:
    global sample_type
    cdef TypeObject* t = <TypeObject*>tp
    cdef PyObject* descr
    cdef PyMemberDef* member
    cdef Py_ssize_t i
    sample_layout.type = NULL
    sample_type = None
    if t.tp_getattro is not GENERIC_GETATTR:
        return False  # __getattribute__ or __getattr__: ask it
    for i in range(4):
        # A member descriptor is a data descriptor: it wins over any instance __dict__ entry.
        descr = _PyType_Lookup(<PyTypeObject*>t, SAMPLE_FIELDS[i])
        if descr is NULL or descr.ob_type is not &PyMemberDescr_Type:
            return False
        member = (<PyMemberDescrObject*>descr).d_member
        if member.type != T_OBJECT_EX:
            return False
        sample_layout.offset[i] = member.offset
    if t.tp_version_tag == 0:  # no valid tag: a change could not be seen
        return False
    sample_layout.version = t.tp_version_tag
    sample_layout.type = t
    sample_type = tp
    return True


cdef inline bint known_layout(object s) except -1:
    cdef TypeObject* t = <TypeObject*>(<PyObject*>s).ob_type
    if t is sample_layout.type and t.tp_version_tag == sample_layout.version:
        return True
    return learn_layout(<object>t)


cdef inline PyObject* field(object s, Py_ssize_t i) noexcept:
    return (<PyObject**>(<char*>(<PyObject*>s) + sample_layout.offset[i]))[0]


cdef int read_sample(object s, Row* row) except -1:
    cdef PyObject* duration
    cdef PyObject* data
    cdef PyObject* keyframe
    cdef PyObject* cto
    if known_layout(s):
        duration, data, keyframe, cto = field(s, 0), field(s, 1), field(s, 2), field(s, 3)
        if duration is not NULL and data is not NULL and keyframe is not NULL and cto is not NULL:
            # Owned references from here: converting one field may run Python code.
            return fill_row(row, <object>duration, <object>data, <object>keyframe, <object>cto)
    # Unset slots raise AttributeError here, as in the reference.
    return fill_row(row, s.duration, s.data, s.keyframe, s.cto)


cdef int fill_row(Row* row, duration_arg, data_arg, keyframe_arg, cto_arg) except -1:
    cdef object duration = duration_arg, data = data_arg, keyframe = keyframe_arg, cto = cto_arg
    row.duration = u32_field(duration)
    data = as_bytes(data)
    row.flags = SYNC_SAMPLE_FLAGS if keyframe else NON_SYNC_SAMPLE_FLAGS
    row.cto = <int32_t>signed_field(cto, -0x80000000, 0x7FFFFFFF, ">i")
    Py_INCREF(data)
    row.data = <PyObject*>data
    row.bytes = PyBytes_AS_STRING(data)
    row.size = PyBytes_GET_SIZE(data)
    return 0


# -- integer fields: the reference's struct.pack range rules, and its exact error otherwise --------


cdef object index(object v, str fmt):
    try:
        return PyNumber_Index(v)
    except TypeError:
        pack(fmt, v)  # struct.error: "required argument is not an integer"
        raise


cdef int64_t signed_field(object v, int64_t lo, int64_t hi, str fmt) except? -1:
    cdef int overflow = 0
    cdef long long x
    if not PyLong_Check(v):
        v = index(v, fmt)
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x < lo or x > hi:
        pack(fmt, v)
        raise struct.error(f"{fmt!r} field out of range: {v}")
    return x


cdef uint64_t u64_field(object v) except? 0xFFFFFFFFFFFFFFFF:
    if not PyLong_Check(v):
        v = index(v, ">Q")
    try:
        return PyLong_AsUnsignedLongLong(v)
    except OverflowError:
        pack(">Q", v)
        raise


cdef inline uint32_t u32_field(object v) except? 0xFFFFFFFF:
    return <uint32_t>signed_field(v, 0, 0xFFFFFFFF, ">I")


cdef object as_bytes(object data):
    # Payloads are bytes; any other buffer is copied once, like b"".join would read it.
    cdef Py_buffer view
    if type(data) is bytes:
        return data
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return PyBytes_FromStringAndSize(<char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# -- big-endian writers ----------------------------------------------------------------------------


cdef inline char* put32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v
    return p + 4


cdef inline char* put64(char* p, uint64_t v) noexcept nogil:
    return put32(put32(p, <uint32_t>(v >> 32)), <uint32_t>v)


cdef inline char* put_box(char* p, uint32_t size, const char* kind) noexcept nogil:
    p = put32(p, size)
    memcpy(p, kind, 4)
    return p + 4


cdef inline char* put_full_box(
    char* p, uint32_t size, const char* kind, uint32_t version, uint32_t flags
) noexcept nogil:
    return put32(put_box(p, size, kind), (version << 24) | flags)


# -- the fragment ----------------------------------------------------------------------------------


cdef bytes write_fragment(
    uint32_t seq, Row* rows, Run* heads, Py_ssize_t nruns, Py_ssize_t filled,
    Py_ssize_t payload, object emsgs,
):
    """The chunk's bytes from filled rows and runs: sizes first, one allocation, then in place."""
    cdef list blobs
    cdef Py_ssize_t i, k, moof_size, emsg_size = 0, size, offset
    cdef Row* row
    cdef Run* head
    cdef bytes out
    cdef char* p
    moof_size = 8 + MFHD_SIZE + nruns * TRAF_FIXED + filled * TRUN_ROW
    # data_offset is relative to the moof (default-base-is-moof) and a signed 32-bit field.
    signed_field(moof_size + 8 + payload - heads[nruns - 1].payload, 0, 0x7FFFFFFF, ">i")
    u32_field(8 + payload)
    blobs = [as_bytes(e.to_bytes()) for e in emsgs]
    for blob in blobs:
        emsg_size += PyBytes_GET_SIZE(blob)

    out = PyBytes_FromStringAndSize(NULL, emsg_size + moof_size + 8 + payload)
    p = PyBytes_AS_STRING(out)
    for blob in blobs:
        size = PyBytes_GET_SIZE(blob)
        memcpy(p, PyBytes_AS_STRING(blob), size)
        p += size
    p = put_box(p, <uint32_t>moof_size, b"moof")
    p = put32(put_full_box(p, MFHD_SIZE, b"mfhd", 0, 0), seq)
    offset = moof_size + 8
    for i in range(nruns):
        head = &heads[i]
        p = put_box(p, <uint32_t>(TRAF_FIXED + head.count * TRUN_ROW), b"traf")
        p = put_full_box(p, 16, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF)
        p = put32(p, head.track_id)
        p = put64(put_full_box(p, 20, b"tfdt", 1, 0), head.base_dts)
        # version 1: signed composition offsets (B-frames before their reference).
        p = put_full_box(p, <uint32_t>(20 + head.count * TRUN_ROW), b"trun", 1, TRUN_FLAGS)
        p = put32(put32(p, <uint32_t>head.count), <uint32_t>offset)
        for k in range(head.first, head.first + head.count):
            row = &rows[k]
            p = put32(p, row.duration)
            p = put32(p, <uint32_t>row.size)
            p = put32(p, row.flags)
            p = put32(p, <uint32_t>row.cto)
            offset += row.size
    p = put_box(p, <uint32_t>(8 + payload), b"mdat")
    for k in range(filled):
        memcpy(p, rows[k].bytes, rows[k].size)
        p += rows[k].size
    return out


def fragment(sequence_number, runs, emsgs=()):
    """One CMAF chunk: ``emsg`` boxes, then ``moof`` + ``mdat`` holding every run's samples."""
    cdef list tracks = []  # (run, samples) for every run with samples
    cdef Row stack_rows[STACK_SAMPLES]
    cdef Run stack_runs[STACK_RUNS]
    cdef Row* rows = stack_rows
    cdef Run* heads = stack_runs
    cdef Row* row
    cdef Run* head
    cdef Py_ssize_t nruns, nrows = 0, filled = 0, i, j, k
    cdef Py_ssize_t payload = 0
    cdef uint32_t seq
    cdef object samples

    for r in runs:
        samples = r.samples
        if samples:
            if type(samples) is not tuple:
                samples = tuple(samples)  # immutable while Python code (e.g. __index__) runs
            tracks.append((r, samples))
            nrows += len(samples)
    if not tracks:
        raise ValueError("a fragment needs at least one sample")
    seq = u32_field(sequence_number)
    nruns = len(tracks)
    try:
        if nrows > STACK_SAMPLES:
            rows = <Row*>PyMem_Malloc(nrows * sizeof(Row))
        if nruns > STACK_RUNS:
            heads = <Run*>PyMem_Malloc(nruns * sizeof(Run))
        if rows is NULL or heads is NULL:
            raise MemoryError()

        for i in range(nruns):
            r, samples = <tuple>tracks[i]
            head = &heads[i]
            head.track_id = u32_field(r.track_id)
            head.base_dts = u64_field(r.base_dts)
            head.first = filled
            head.payload = payload
            for j in range(len(<tuple>samples)):
                row = &rows[filled]
                read_sample((<tuple>samples)[j], row)
                filled += 1
                payload += row.size
            head.count = filled - head.first
            head.payload = payload - head.payload
        return write_fragment(seq, rows, heads, nruns, filled, payload, emsgs)
    finally:
        if rows is not NULL:
            for k in range(filled):
                Py_XDECREF(rows[k].data)
            if rows is not stack_rows:
                PyMem_Free(rows)
        if heads is not stack_runs and heads is not NULL:
            PyMem_Free(heads)


def part_fragment(
    sequence_number, lead_track_id, lead_offset, lead, end_dts, audio_track_id, audio_offset,
    audio, emsgs=(),
):
    """One part's CMAF chunk straight from its packets (see ``packager.fmp4.part_fragment_py``)."""
    cdef tuple leads = tuple(lead), audios = tuple(audio)  # immutable while Python code runs
    cdef Py_ssize_t nl = len(leads), na = len(audios), nrows = nl + na
    cdef Row stack_rows[STACK_SAMPLES]
    cdef Run heads[2]
    cdef Row* rows = stack_rows
    cdef Row* row
    cdef Run* head
    cdef Py_ssize_t nruns = 0, filled = 0, i, k
    cdef Py_ssize_t payload = 0
    cdef uint32_t seq
    cdef object p, dts, duration
    # The reference's order: run heads (their attributes and sums) before any sample is read.
    lead_base = leads[0].dts + lead_offset if nl else None
    audio_base = audios[0].dts + audio_offset if na else None
    if nrows == 0:
        raise ValueError("a fragment needs at least one sample")
    seq = u32_field(sequence_number)
    try:
        if nrows > STACK_SAMPLES:
            rows = <Row*>PyMem_Malloc(nrows * sizeof(Row))
            if rows is NULL:
                raise MemoryError()
        if nl:
            head = &heads[nruns]
            nruns += 1
            head.track_id = u32_field(lead_track_id)
            head.base_dts = u64_field(lead_base)
            head.first = filled
            for i in range(nl):
                p = leads[i]
                dts = p.dts
                # A lead sample lasts until the next one's decode time (at least one tick).
                duration = (leads[i + 1].dts if i + 1 < nl else end_dts) - dts
                if duration < 1:
                    duration = 1
                row = &rows[filled]
                fill_row(row, duration, p.payload, p.keyframe, p.pts - dts)
                filled += 1
                payload += row.size
            head.count = filled
            head.payload = payload
        if na:
            head = &heads[nruns]
            nruns += 1
            head.track_id = u32_field(audio_track_id)
            head.base_dts = u64_field(audio_base)
            head.first = filled
            for i in range(na):
                p = audios[i]
                row = &rows[filled]
                fill_row(row, p.duration, p.payload, True, 0)
                filled += 1
                payload += row.size
            head.count = filled - head.first
            head.payload = payload - (heads[0].payload if nruns == 2 else 0)
        return write_fragment(seq, rows, heads, nruns, filled, payload, emsgs)
    finally:
        if rows is not NULL:
            for k in range(filled):
                Py_XDECREF(rows[k].data)
            if rows is not stack_rows:
                PyMem_Free(rows)
