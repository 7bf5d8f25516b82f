"""The fMP4 fragment writer: every case runs on the reference and the Cython twin.

The ``write`` fixture yields ``py-writer`` (:func:`packager.fmp4.fragment_py`) and ``c-writer``
(``native.fmp4_writer.fragment``), ``write_part`` the same for a part written straight from
packets (:func:`packager.fmp4.part_fragment_py`); cases that compare the two call both directly.
"""

from __future__ import annotations

import importlib
import io
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packager import fmp4
from packager.fmp4 import (
    NON_SYNC_SAMPLE_FLAGS,
    SYNC_SAMPLE_FLAGS,
    Emsg,
    Sample,
    TrackInfo,
    TrackRun,
    fragment_py,
    init_segment,
    part_fragment_py,
)
from transcode.output import EncodedPacket

from .boxes import find, iter_boxes, trafs
from .media import FRAME_TICKS, encode_audio, encode_video

try:
    from native.fmp4_writer import fragment as fragment_c
    from native.fmp4_writer import part_fragment as part_fragment_c
except ImportError as exc:  # extension not built: the c-writer cases are skipped
    fragment_c = part_fragment_c = None
    _NATIVE_MISSING = f"native.fmp4_writer not importable ({exc}); run `make native`"
else:
    _NATIVE_MISSING = ""

needs_native = pytest.mark.skipif(fragment_c is None, reason=_NATIVE_MISSING)

Writer = Callable[..., bytes]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(fragment_py, id="py-writer"),
        pytest.param(fragment_c, id="c-writer", marks=needs_native),
    ],
)
def write(request: pytest.FixtureRequest) -> Writer:
    """Each fragment writer: the pure-Python reference and the Cython twin."""
    return request.param  # type: ignore[no-any-return]


def both(*args: Any) -> bytes:
    """The reference's bytes, after checking the twin (when built) writes the same."""
    expected = fragment_py(*args)
    if fragment_c is not None:
        assert fragment_c(*args) == expected
    return expected


def check_parses(data: bytes, runs: Sequence[Any], emsgs: Sequence[Emsg] = ()) -> None:
    """Box sizes add up, and the moof describes exactly the samples that the mdat holds."""
    kinds = [kind for kind, _ in iter_boxes(data)]  # asserts every size fits
    assert kinds == [b"emsg"] * len(emsgs) + [b"moof", b"mdat"]
    moof_at = sum(len(e.to_bytes()) for e in emsgs)
    for traf in find(data, [b"moof", b"traf"]):
        assert [kind for kind, _ in iter_boxes(traf)] == [b"tfhd", b"tfdt", b"trun"]
    (mdat,) = find(data, [b"mdat"])
    kept = [r for r in runs if r.samples]
    assert len(trafs(data)) == len(kept)
    for info, run in zip(trafs(data), kept, strict=True):
        assert (info.track_id, info.base_dts) == (run.track_id, run.base_dts)
        assert info.durations == [s.duration for s in run.samples]
        assert info.sizes == [len(s.data) for s in run.samples]
        assert info.ctos == [s.cto for s in run.samples]
        want = [SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS for s in run.samples]
        assert info.flags == want
        pos = moof_at + info.data_offset  # default-base-is-moof
        assert data[pos : pos + sum(info.sizes)] == b"".join(s.data for s in run.samples)
    assert len(mdat) == sum(len(s.data) for r in kept for s in r.samples)


def video(n: int, size: int = 100, base: int = 0) -> TrackRun:
    samples = [Sample(3000, bytes([i % 256]) * size, i == 0, 3000 * (i % 3)) for i in range(n)]
    return TrackRun(1, base, samples)


def audio(n: int, base: int = 0) -> TrackRun:
    return TrackRun(2, base, tuple(Sample(1024, bytes([7, i % 256]) * 200, True) for i in range(n)))


# -- hand-made runs --------------------------------------------------------------------------------

CASES = {
    "one-track": ([video(10)], []),
    "two-tracks": ([video(10), audio(16)], []),
    "empty-track-skipped": ([TrackRun(3, 0, []), video(3), TrackRun(4, 9, ())], []),
    "zero-length-sample": ([TrackRun(1, 0, [Sample(1, b"", True), Sample(2, b"x", False)])], []),
    "negative-cto": ([TrackRun(1, 0, [Sample(3000, b"ab", False, -6000)])], []),
    "cto-limits": (
        [TrackRun(1, 0, [Sample(1, b"a", 0, -(2**31)), Sample(1, b"b", 1, 2**31 - 1)])],
        [],
    ),
    "large-base-dts": ([video(2, base=2**40 + 5), audio(2, base=2**64 - 1)], []),
    "field-limits": ([TrackRun(2**32 - 1, 0, [Sample(2**32 - 1, b"z", True)])], []),
    "emsg": ([video(2)], [Emsg(90000, 2**33, 1, b"ID3\x04" + bytes(20))]),
    "two-emsgs": ([audio(1)], [Emsg(1000, 0, 1, b""), Emsg(48000, 5, 2, b"x", "urn:x", "v", 10)]),
    "many-runs": ([TrackRun(i, i, [Sample(1, bytes([i]), True)]) for i in range(1, 12)], []),
    "many-samples": ([video(200, size=3), audio(70)], []),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hand_made_runs(write: Writer, case: tuple[list[TrackRun], list[Emsg]]) -> None:
    runs, emsgs = case
    data = write(77, runs, emsgs)
    assert data == both(77, runs, emsgs)
    check_parses(data, runs, emsgs)
    assert struct.unpack_from(">I", find(data, [b"moof", b"mfhd"])[0], 4) == (77,)


def test_layout_of_two_tracks(write: Writer) -> None:
    # Written out once by hand: §8.8 box order and sizes, data offsets counted from the moof.
    runs = [
        TrackRun(1, 2**32 + 1, [Sample(3000, b"\xaa\xbb", True, -1)]),
        TrackRun(2, 5, [Sample(1024, b"\xcc", False)]),
    ]
    moof = 8 + 16 + 2 * (64 + 16)
    expected = (
        struct.pack(">I4sI4sII", moof, b"moof", 16, b"mfhd", 0, 9)
        + struct.pack(">I4sI4sII", 80, b"traf", 16, b"tfhd", 0x020000, 1)
        + struct.pack(">I4sIQ", 20, b"tfdt", 1 << 24, 2**32 + 1)
        + struct.pack(">I4sIIi", 36, b"trun", 0x01000F01, 1, moof + 8)
        + struct.pack(">IIIi", 3000, 2, SYNC_SAMPLE_FLAGS, -1)
        + struct.pack(">I4sI4sII", 80, b"traf", 16, b"tfhd", 0x020000, 2)
        + struct.pack(">I4sIQ", 20, b"tfdt", 1 << 24, 5)
        + struct.pack(">I4sIIi", 36, b"trun", 0x01000F01, 1, moof + 10)
        + struct.pack(">IIIi", 1024, 1, NON_SYNC_SAMPLE_FLAGS, 0)
        + struct.pack(">I4s", 11, b"mdat")
        + b"\xaa\xbb\xcc"
    )
    assert write(9, runs) == expected


def test_inputs_other_than_samples_tuples_and_bytes(write: Writer) -> None:
    # Runs and samples may be any iterable/sequence, payloads any bytes-like object.
    class Duck(NamedTuple):  # same attributes, not a slotted dataclass
        duration: int
        data: Any
        keyframe: bool
        cto: int = 0

    @dataclass(frozen=True, slots=True)
    class Child(Sample):
        note: str = ""

    samples: list[Any] = [
        Sample(1, bytearray(b"ab"), True),
        Duck(2, memoryview(b"cde"), False, -3),
        Child(3, b"f", False, 4, "x"),
        Sample(True, b"g", 0),
        Duck(4, b"h", 1),
    ]
    runs = iter([TrackRun(1, 0, samples), TrackRun(2, 1, range(0))])
    data = write(1, runs)
    assert data == fragment_py(1, [TrackRun(1, 0, samples)])
    check_parses(data, [TrackRun(1, 0, samples)])


def test_changed_sample_class_is_read_again(write: Writer) -> None:
    # The twin reads slotted fields directly; a class changed after a first fragment must still
    # be read through its attributes.
    @dataclass(frozen=True, slots=True)
    class Local:
        duration: int
        data: bytes
        keyframe: bool
        cto: int = 0

    runs: list[Any] = [TrackRun(1, 0, [Local(1, b"ab", True, 2)])]
    before = write(1, runs)
    Local.cto = property(lambda self: -5)
    Local.data = property(lambda self: b"xyz")
    after = write(1, runs)
    assert after != before
    assert after == fragment_py(1, runs)
    assert trafs(after)[0].ctos == [-5]


@needs_native
def test_samples_from_a_callback_that_mutates_them() -> None:
    # Python code runs while the twin reads samples (__index__ here); the list it empties was
    # already taken whole, so nothing is read past its end. (The reference writes a trun whose
    # count disagrees with its rows here: not a case for comparison.)
    assert fragment_c is not None
    samples: list[Any] = []

    class Sneaky:
        def __index__(self) -> int:
            # Drops the list's and the sample's references to the fields read before this.
            if samples:
                object.__setattr__(samples[0], "data", b"zz")
                samples.clear()
            return 5

    samples += [Sample(Sneaky(), bytes(bytearray(b"ab")), True), Sample(1, b"c", False)]
    data = fragment_c(1, [TrackRun(1, 0, samples)])
    assert trafs(data)[0].durations == [5, 1]
    assert find(data, [b"mdat"]) == [b"abc"]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "runs",
    [[], [TrackRun(1, 0, [])], [TrackRun(1, 0), TrackRun(2, 5, ())]],
    ids=["no-runs", "empty-run", "empty-runs"],
)
def test_no_samples(write: Writer, runs: list[TrackRun]) -> None:
    with pytest.raises(ValueError, match="a fragment needs at least one sample"):
        write(1, runs, [Emsg(1, 0, 1, b"")])


def bad(**changes: Any) -> tuple[int, list[TrackRun]]:
    fields = {"seq": 1, "track_id": 1, "base_dts": 0, "duration": 1, "data": b"x", "cto": 0}
    f = fields | changes
    sample = Sample(f["duration"], f["data"], True, f["cto"])
    return f["seq"], [TrackRun(f["track_id"], f["base_dts"], [sample])]


ERRORS = {
    "sequence-negative": (bad(seq=-1), struct.error),
    "sequence-2^32": (bad(seq=2**32), struct.error),
    "track-id-2^32": (bad(track_id=2**32), struct.error),
    "base-dts-negative": (bad(base_dts=-1), struct.error),
    "base-dts-2^64": (bad(base_dts=2**64), struct.error),
    "duration-negative": (bad(duration=-1), struct.error),
    "duration-huge": (bad(duration=2**100), struct.error),
    "duration-float": (bad(duration=1.0), struct.error),
    "cto-2^31": (bad(cto=2**31), struct.error),
    "cto-below-int32": (bad(cto=-(2**31) - 1), struct.error),
    "cto-str": (bad(cto="1"), struct.error),
    "data-str": (bad(data="x"), TypeError),
    "data-int": (bad(data=3), TypeError),
}


@pytest.mark.parametrize("case", ERRORS.values(), ids=ERRORS.keys())
def test_invalid_fields(write: Writer, case: tuple[tuple[int, list[TrackRun]], type]) -> None:
    (seq, runs), error = case
    with pytest.raises(error) as reference:
        fragment_py(seq, runs)
    with pytest.raises(error) as raised:
        write(seq, runs)
    if error is struct.error:  # the twin defers to struct.pack: the same message
        assert str(raised.value) == str(reference.value)


def test_missing_attribute(write: Writer) -> None:
    class NoCto:
        duration, data, keyframe = 1, b"", True

    with pytest.raises(AttributeError, match="cto"):
        write(1, [TrackRun(1, 0, [NoCto()])])


# -- random runs -----------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
samples_st = st.builds(
    Sample,
    duration=u32,
    data=st.binary(max_size=40),
    keyframe=st.booleans(),
    cto=st.integers(-(2**31), 2**31 - 1),
)
runs_st = st.lists(
    st.builds(
        TrackRun,
        track_id=u32,
        base_dts=st.integers(0, 2**64 - 1),
        samples=st.lists(samples_st, max_size=12) | st.tuples(samples_st),
    ),
    max_size=4,
)
emsgs_st = st.lists(
    st.builds(
        Emsg,
        timescale=u32,
        presentation_time=st.integers(0, 2**64 - 1),
        event_id=u32,
        message_data=st.binary(max_size=20),
        value=st.text(max_size=5),
    ),
    max_size=2,
)


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=u32, runs=runs_st, emsgs=emsgs_st)
def test_random_runs_identical_and_parse(seq: int, runs: list[TrackRun], emsgs: list[Emsg]) -> None:
    assert fragment_c is not None
    if not any(r.samples for r in runs):
        for writer in (fragment_py, fragment_c):
            with pytest.raises(ValueError):
                writer(seq, runs, emsgs)
        return
    data = fragment_c(seq, runs, emsgs)
    assert data == fragment_py(seq, runs, emsgs)
    check_parses(data, runs, emsgs)


@settings(max_examples=100, deadline=None)
@given(seq=u32, runs=runs_st.filter(lambda rs: any(r.samples for r in rs)), emsgs=emsgs_st)
def test_random_runs_parse(
    write: Writer, seq: int, runs: list[TrackRun], emsgs: list[Emsg]
) -> None:
    check_parses(write(seq, runs, emsgs), runs, emsgs)


# -- a part straight from packets ------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(part_fragment_py, id="py-writer"),
        pytest.param(part_fragment_c, id="c-writer", marks=needs_native),
    ],
)
def write_part(request: pytest.FixtureRequest) -> Writer:
    """Each writer of a part from packets: the pure-Python reference and the Cython twin."""
    return request.param  # type: ignore[no-any-return]


def packet(dts: int, pts: int, duration: int, keyframe: bool, size: int) -> EncodedPacket:
    return EncodedPacket("v", pts, dts, duration, keyframe, bytes([dts % 256]) * size, 0.0)


def part_runs(lead: list[EncodedPacket], end: int, audio: list[EncodedPacket]) -> list[TrackRun]:
    """The runs the part's definition makes of its packets, spelled out sample by sample."""
    ends = [p.dts for p in lead[1:]] + [end]
    return [
        TrackRun(
            1,
            lead[0].dts + 900,
            [
                Sample(max(e - p.dts, 1), p.payload, p.keyframe, p.pts - p.dts)
                for p, e in zip(lead, ends, strict=True)
            ],
        ),
        TrackRun(2, audio[0].dts + 480, [Sample(a.duration, a.payload, True) for a in audio]),
    ]


PARTS = {
    "ordinary": ([packet(3000 * i, 3000 * i + 6000, 3000, i == 0, 50) for i in range(10)], 30_000),
    # Millisecond source timestamps: uneven gaps, the last sample up to the part's end.
    "uneven": ([packet(d, d, 2970, d == 0, 9) for d in (0, 2970, 6030, 9000)], 12_100),
    # A repeated dts (a sample with no time of its own) lasts one tick; B-frames' negative cto.
    "repeated-dts": ([packet(0, 3000, 3000, True, 4), packet(0, -3000, 3000, False, 4)], 6000),
    "many": ([packet(10 * i, 10 * i, 10, i % 30 == 0, 3) for i in range(150)], 1500),
}


@pytest.mark.parametrize("case", PARTS.values(), ids=PARTS.keys())
def test_part_from_packets(write_part: Writer, case: tuple[list[EncodedPacket], int]) -> None:
    lead, end = case
    audio = [packet(1024 * i + 7, 1024 * i + 7, 1024, False, 20) for i in range(len(lead) + 3)]
    emsgs = [Emsg(90000, 6000, 1, b"ID3\x04" + bytes(12))]
    data = write_part(5, 1, 900, lead, end, 2, 480, audio, emsgs)
    assert data == fragment_py(5, part_runs(lead, end, audio), emsgs)
    video_only = write_part(6, 1, 900, lead, end, 2, 480, [])
    assert video_only == fragment_py(6, part_runs(lead, end, audio)[:1])
    audio_only = write_part(7, 2, 0, [], 0, 2, 480, tuple(audio))
    assert audio_only == fragment_py(7, part_runs(lead, end, audio)[1:])


def test_part_without_packets(write_part: Writer) -> None:
    with pytest.raises(ValueError, match="a fragment needs at least one sample"):
        write_part(1, 1, 0, [], 0, 2, 0, ())


PART_ERRORS = {
    "gap-2^32": (([packet(0, 0, 1, True, 1)], 2**32), struct.error),
    "cto-2^31": (([packet(0, 2**31, 1, True, 1)], 1), struct.error),
    "negative-base": (([packet(-901, -901, 1, True, 1)], 0), struct.error),
}


@pytest.mark.parametrize("case", PART_ERRORS.values(), ids=PART_ERRORS.keys())
def test_part_invalid_fields(write_part: Writer, case: tuple[tuple[Any, int], type]) -> None:
    (lead, end), error = case
    with pytest.raises(error) as reference:
        part_fragment_py(1, 1, 900, lead, end, 2, 0, [])
    with pytest.raises(error) as raised:
        write_part(1, 1, 900, lead, end, 2, 0, [])
    assert str(raised.value) == str(reference.value)


def test_part_packet_without_payload(write_part: Writer) -> None:
    class NoPayload:
        pts = dts = 0
        duration, keyframe = 1, True

    with pytest.raises(AttributeError, match="payload"):
        write_part(1, 1, 0, [NoPayload()], 1, 2, 0, [])


packets_st = st.lists(
    st.builds(
        packet,
        dts=st.integers(0, 2**20),
        pts=st.integers(0, 2**20),
        duration=st.integers(1, 5000),
        keyframe=st.booleans(),
        size=st.integers(0, 30),
    ),
    max_size=80,
).map(lambda ps: sorted(ps, key=lambda p: p.dts))


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=u32, lead=packets_st, extra=st.integers(0, 5000), audio=packets_st, emsgs=emsgs_st)
def test_random_parts_identical(
    seq: int, lead: list[EncodedPacket], extra: int, audio: list[EncodedPacket], emsgs: list[Emsg]
) -> None:
    assert part_fragment_c is not None
    end = (lead[-1].dts if lead else 0) + extra
    args = (seq, 1, 90, lead, end, 2, 3, audio, emsgs)
    if not lead and not audio:
        for writer in (part_fragment_py, part_fragment_c):
            with pytest.raises(ValueError):
                writer(*args)
        return
    assert part_fragment_c(*args) == part_fragment_py(*args)


# -- selection -------------------------------------------------------------------------------------


def test_selected_writer() -> None:
    if os.environ.get("SHOPCAST_NO_EXTENSIONS"):
        assert fmp4.fragment is fragment_py
        assert fmp4.part_fragment is part_fragment_py
        assert not fmp4.NATIVE
        return
    module = importlib.import_module("native.fmp4_writer")  # raises if the build is broken
    assert fmp4.fragment is module.fragment
    assert fmp4.part_fragment is module.part_fragment
    assert fmp4.NATIVE


# -- real media ------------------------------------------------------------------------------------


def chunked(samples: list[Sample], n: int) -> list[list[Sample]]:
    return [samples[i : i + n] for i in range(0, len(samples), n)]


@pytest.mark.parametrize("writer", [pytest.param(fragment_c, id="c-writer", marks=needs_native)])
def test_real_media_decodes(writer: Writer) -> None:
    # H.264 with B-frames (composition offsets) and AAC, 10 frames a fragment: PyAV demuxes
    # init + fragments and decodes every frame at its timestamp.
    vinfo, vpackets = encode_video("v", 1.0, bframes=2, gop=15)
    ainfo, apackets = encode_audio("a", 1.0)
    start = min(p.dts for p in vpackets)  # B-frames start dts below 0; tfdt is unsigned
    vsamples = [
        Sample(
            (vpackets[i + 1].dts if i + 1 < len(vpackets) else p.dts + FRAME_TICKS) - p.dts,
            p.payload,
            p.keyframe,
            p.pts - p.dts,
        )
        for i, p in enumerate(vpackets)
    ]
    asamples = [Sample(1024, p.payload, True) for p in apackets]
    init = init_segment(
        [
            TrackInfo(1, "video", vinfo.timescale, vinfo.extradata, vinfo.width, vinfo.height),
            TrackInfo(2, "audio", ainfo.timescale, ainfo.extradata, sample_rate=48000, channels=2),
        ]
    )
    parts, vdts, adts = [], 0, 0
    vchunks, achunks = chunked(vsamples, 10), chunked(asamples, 16)
    for seq in range(max(len(vchunks), len(achunks))):
        runs = []
        if seq < len(vchunks):
            runs.append(TrackRun(1, vdts, vchunks[seq]))
            vdts += sum(s.duration for s in vchunks[seq])
        if seq < len(achunks):
            runs.append(TrackRun(2, adts, achunks[seq]))
            adts += 1024 * len(achunks[seq])
        emsgs = [Emsg(vinfo.timescale, vdts, seq, b"ID3")] if seq == 1 else []
        parts.append(writer(seq + 1, runs, emsgs))
        assert parts[-1] == fragment_py(seq + 1, runs, emsgs)

    blob = init + b"".join(parts)
    with av.open(io.BytesIO(blob)) as container:
        video_pts = [frame.pts for frame in container.decode(video=0)]
    with av.open(io.BytesIO(blob)) as container:
        audio_frames = sum(1 for _ in container.decode(audio=0))
    assert video_pts == sorted(p.pts - start for p in vpackets)
    assert audio_frames == len(apackets)
