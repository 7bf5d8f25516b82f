"""Fuzz the demuxer: only events or MPEGTSError escape, and what it holds stays bounded."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.codecs import MAX_ADTS_FRAME
from ingest.media import MediaUnit
from ingest.mpegts import (
    NEED_DATA,
    DataDiscarded,
    MPEGTSError,
    ProgramChanged,
    Resynced,
    StreamEnded,
    TSDemuxer,
    TSLimits,
)
from ingest.mpegts.psi import MAX_SECTION

LIMITS = TSLimits(max_pes_size=32 << 10, max_resync_scan=8 << 10)
#: Two PES (video, audio), a section on each PSI PID, carried ADTS, one packet of input.
MEMORY_BOUND = 2 * LIMITS.max_pes_size + 2 * (MAX_SECTION + 188) + MAX_ADTS_FRAME + 2 * 188
EVENTS = (MediaUnit, ProgramChanged, Resynced, DataDiscarded)
SEED = (Path(__file__).parent.parent / "vectors" / "ts_h264_aac.ts").read_bytes()[: 188 * 120]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(pieces: list[bytes]) -> str:
    """Feed pieces; only events or MPEGTSError come out. Returns what happened (event kinds)."""
    demuxer = TSDemuxer(LIMITS, clock=lambda: 0.0)
    kinds: set[str] = set()
    try:
        for piece in [*pieces, b""]:
            demuxer.receive_data(piece)
            while (event := demuxer.next_event()) is not NEED_DATA:
                if isinstance(event, StreamEnded):
                    return f"{sorted(kinds)} ended"
                assert isinstance(event, EVENTS), event
                assert demuxer.buffered - len(piece) <= MEMORY_BOUND
                kinds.add(event.codec if isinstance(event, MediaUnit) else type(event).__name__)
    except MPEGTSError as exc:
        return f"{sorted(kinds)} {type(exc).__name__}"
    return str(sorted(kinds))


@SETTINGS
@given(st.lists(st.binary(max_size=600), max_size=20))
def test_random_bytes(pieces: list[bytes]) -> None:
    run(pieces)


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=40),
    st.integers(1, 4000),
)
def test_mutated_vector(flips: list[tuple[int, int]], piece: int) -> None:
    data = bytearray(SEED)
    for at, value in flips:
        data[at] = value
    run([bytes(data[i : i + piece]) for i in range(0, len(data), piece)])


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 0x1FFF), st.integers(0, 255), st.binary(max_size=184)), max_size=60
    )
)
def test_well_framed_random_packets(packets: list[tuple[int, int, bytes]]) -> None:
    """Sync bytes in place, so the PSI and PES paths (not just resync) get random input."""
    head = SEED[: 188 * 4]  # PAT, PMT and the start of the stream
    out = [head]
    for pid, flags, body in packets:
        pid = (0x100, 0x101, 0x1000, 0)[pid % 4] if pid < 0x1000 else pid
        out.append(
            bytes([0x47, (flags & 0xC0) | pid >> 8, pid & 0xFF, flags & 0x3F | 0x10])
            + body.ljust(184, b"\xff")
        )
    run([b"".join(out)])
