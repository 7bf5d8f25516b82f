# cython: language_level=3
"""Compiled twins of :func:`ingest.rtmp.flv.parse_video`, :func:`ingest.rtmp.flv.parse_audio`
and :class:`ingest.rtmp.flv.TimestampUnwrapper`.

The bodies nearly every publisher sends (legacy AVC sequence header and NAL units, AAC
AudioSpecificConfig and raw frames) are read in C and their :class:`ingest.media.MediaUnit` is
built without the Python ``__init__``; every other body, including every malformed one, goes to
the pure-Python reference, so units and refusals are the same. ``tests/ingest/rtmp/test_flv.py``
runs both. ``ingest.rtmp.tags`` selects them.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyTypeObject
from libc.stdint cimport int32_t, uint8_t

from dataclasses import fields

from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from ingest.rtmp import flv

__all__ = ["TimestampUnwrapper", "parse_audio", "parse_video"]

cdef extern from "Python.h":
    object type_alloc "PyType_GenericAlloc" (PyTypeObject* type, Py_ssize_t nitems)
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        int type
        int flags
    int T_OBJECT_EX
    int READONLY
    # What a slot's descriptor does on assignment, without finding the descriptor first.
    int PyMember_SetOne(char* addr, PyMemberDef* member, object value) except -1

cdef enum:
    VIDEO_KEYFRAME = 1
    VIDEO_COMMAND_FRAME = 5
    CODEC_AVC = 7
    AVC_SEQUENCE_HEADER = 0
    AVC_NALU = 1
    SOUND_AAC = 10
    AAC_SEQUENCE_HEADER = 0
    AAC_RAW = 1

cdef object UnitType = MediaUnit
cdef object VIDEO = MediaKind.VIDEO
cdef object AUDIO = MediaKind.AUDIO
cdef object TIMEBASE = MILLISECONDS
cdef object H264 = "h264"
cdef object AAC = "aac"
cdef object py_parse_video = flv.parse_video
cdef object py_parse_audio = flv.parse_audio
# The slots in field order; filled the way their descriptors fill them (the class's own
# __setattr__ refuses: it is frozen). If MediaUnit ever gains a field, a __dict__ or slots of
# another kind, the class is called instead.
cdef tuple FIELDS = (
    "kind", "codec", "pts", "dts", "timebase", "keyframe", "payload", "arrival", "is_config"
)
cdef bint FAST_UNIT = (
    tuple(f.name for f in fields(MediaUnit)) == FIELDS and MediaUnit.__dictoffset__ == 0
)
cdef PyMemberDef* SLOTS[9]  # the slots' members, in FIELDS order (used when FAST_UNIT)


cdef bint _find_slots() except -1:
    cdef PyMemberDef* member
    for i, name in enumerate(FIELDS):
        descr = MediaUnit.__dict__.get(name)
        if type(descr).__name__ != "member_descriptor":
            return False
        member = (<PyMemberDescrObject*>descr).d_member
        if member.type != T_OBJECT_EX or member.flags & READONLY:
            return False
        SLOTS[i] = member
    return True


FAST_UNIT = FAST_UNIT and _find_slots()


def _fast_unit():
    """Whether units are built in C (the tests check it stays so)."""
    return FAST_UNIT


cdef object new_unit(
    object kind, object codec, long long pts, long long dts, bint keyframe, object payload,
    object arrival, bint is_config,
):
    if not FAST_UNIT:
        return UnitType(kind, codec, pts, dts, TIMEBASE, keyframe, payload, arrival, is_config)
    unit = type_alloc(<PyTypeObject*>UnitType, 0)
    cdef char* addr = <char*><void*>unit
    PyMember_SetOne(addr, SLOTS[0], kind)
    PyMember_SetOne(addr, SLOTS[1], codec)
    PyMember_SetOne(addr, SLOTS[2], pts)
    PyMember_SetOne(addr, SLOTS[3], dts)
    PyMember_SetOne(addr, SLOTS[4], TIMEBASE)
    PyMember_SetOne(addr, SLOTS[5], keyframe)
    PyMember_SetOne(addr, SLOTS[6], payload)
    PyMember_SetOne(addr, SLOTS[7], arrival)
    PyMember_SetOne(addr, SLOTS[8], is_config)
    return unit


cdef inline bytes tail(object payload, Py_ssize_t start):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(payload) + start, n - start)


cdef inline bint small_int(object value):
    # Timestamps are unwrapped milliseconds: far inside 64 bits, but the reference takes any int.
    return type(value) is int and -(1 << 62) < value < (1 << 62)


def parse_video(payload, dts, arrival):
    """Return the unit in a video message body, or ``None`` for bodies that carry no media."""
    cdef const uint8_t* d
    cdef Py_ssize_t n
    cdef uint8_t b0, frame_type
    cdef int32_t cts
    cdef long long ms
    if type(payload) is not bytes or not small_int(dts):
        return py_parse_video(payload, dts, arrival)
    n = PyBytes_GET_SIZE(payload)
    d = <const uint8_t*>PyBytes_AS_STRING(payload)
    if n >= 5:
        b0 = d[0]
        frame_type = b0 >> 4
        # Legacy AVC (FLV §E.4.3.1): no ExHeader bit, a picture frame type, codec id 7.
        if (b0 & 0x0F) == CODEC_AVC and VIDEO_KEYFRAME <= frame_type <= 4:
            ms = dts
            if d[1] == AVC_SEQUENCE_HEADER:
                return new_unit(VIDEO, H264, ms, ms, True, tail(payload, 5), arrival, True)
            if d[1] == AVC_NALU:
                cts = (d[2] << 16) | (d[3] << 8) | d[4]
                if cts & 0x800000:
                    cts -= 1 << 24  # SI24
                return new_unit(
                    VIDEO, H264, ms + cts, ms, frame_type == VIDEO_KEYFRAME,
                    tail(payload, 5), arrival, False,
                )
    return py_parse_video(payload, dts, arrival)


def parse_audio(payload, dts, arrival):
    """Return the unit in an audio message body, or ``None`` for bodies that carry no media."""
    cdef const uint8_t* d
    cdef long long ms
    if type(payload) is not bytes or not small_int(dts):
        return py_parse_audio(payload, dts, arrival)
    d = <const uint8_t*>PyBytes_AS_STRING(payload)
    if PyBytes_GET_SIZE(payload) >= 2 and d[0] >> 4 == SOUND_AAC:
        ms = dts
        if d[1] == AAC_RAW:
            return new_unit(AUDIO, AAC, ms, ms, True, tail(payload, 2), arrival, False)
        if d[1] == AAC_SEQUENCE_HEADER:
            return new_unit(AUDIO, AAC, ms, ms, True, tail(payload, 2), arrival, True)
    return py_parse_audio(payload, dts, arrival)


cdef class TimestampUnwrapper:
    """Compiled twin of :class:`ingest.rtmp.flv.TimestampUnwrapper`: 32-bit RTMP millisecond
    timestamps (they wrap) extended into a 64-bit clock; steps under 2^31 ms are followed."""

    cdef long long _value
    cdef long long _last  # -1 until the first timestamp

    def __init__(self):
        self._value = 0
        self._last = -1

    def unwrap(self, raw):
        cdef long long r = raw & 0xFFFFFFFF
        cdef long long step
        if self._last < 0:
            self._value = r
        else:
            step = (r - self._last) & 0xFFFFFFFF
            self._value += step - (1LL << 32) if step >= (1LL << 31) else step
        self._last = r
        return self._value
