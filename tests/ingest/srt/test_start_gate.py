"""The SRT start gate: units wait until every stream of the program has its configuration."""

from __future__ import annotations

from fractions import Fraction

from ingest.media import MediaKind, MediaUnit
from ingest.mpegts import TS_CLOCK
from ingest.srt.server import StartGate

V, A = MediaKind.VIDEO, MediaKind.AUDIO


def unit(kind: MediaKind, dts: int, config: bool = False) -> MediaUnit:
    codec = "h264" if kind is V else "aac"
    return MediaUnit(kind, codec, dts, dts, TS_CLOCK, True, b"x", 0.0, config)


def test_holds_until_audio_is_configured_then_releases_in_dts_order() -> None:
    gate = StartGate()
    gate.expect({V, A})
    video = [unit(V, 126000, True), *(unit(V, 126000 + 3000 * i) for i in range(20))]
    assert all(gate.offer(u) == [] for u in video)
    released = gate.offer(unit(A, 126000 + 1920, True))
    assert len(released) == 22
    assert released[:3] == [video[0], video[1], unit(A, 127920, True)]
    assert gate.offer(unit(A, 127920)) == [unit(A, 127920)]  # open from now on


def test_a_missing_stream_does_not_hold_forever() -> None:
    gate = StartGate(max_span=Fraction(1))
    gate.expect({V, A})
    released = [len(gate.offer(unit(V, 3000 * i, i == 0))) for i in range(40)]
    # held while the units span at most 1 s (31 frames), released by the one beyond it
    assert released == [0] * 31 + [32] + [1] * 8


def test_video_only_program_is_not_held() -> None:
    gate = StartGate()
    gate.expect({V})
    first = unit(V, 0, True)
    assert gate.offer(first) == [first]
