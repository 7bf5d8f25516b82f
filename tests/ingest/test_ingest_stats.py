"""IngestStats: the running bitrate, fps and GOP figures of a publish session."""

from __future__ import annotations

import pytest

from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from ingest.sessions import IngestStats


def video(n: int, arrival: float, size: int = 2500) -> MediaUnit:
    dts = n * 1000 // 30
    return MediaUnit(
        MediaKind.VIDEO, "h264", dts, dts, MILLISECONDS, n % 30 == 0, bytes(size), arrival
    )


def audio(n: int, arrival: float, size: int = 200) -> MediaUnit:
    ms = n * 1024 * 1000 // 48000
    return MediaUnit(MediaKind.AUDIO, "aac", ms, ms, MILLISECONDS, True, bytes(size), arrival)


def feed(stats: IngestStats, start: float, seconds: int, first_frame: int = 0) -> None:
    """30 fps video (2500 B) and 48 kHz AAC (200 B), arriving in real time from ``start``."""
    units = [(n / 30, video(first_frame + n, start + n / 30)) for n in range(30 * seconds)]
    units += [(n * 1024 / 48000, audio(n, start + n * 1024 / 48000)) for n in range(47 * seconds)]
    for _, unit in sorted(units, key=lambda pair: pair[0]):
        stats.add(unit)


def test_bitrate_fps_and_gop_over_the_last_seconds() -> None:
    stats = IngestStats()
    assert (stats.bitrate, stats.fps, stats.gop) == (0, None, None)
    feed(stats, 100.0, 8)
    assert stats.fps == pytest.approx(30, abs=0.1)
    assert stats.bitrate == pytest.approx((30 * 2500 + 47 * 200) * 8, rel=0.03)
    assert stats.gop == pytest.approx(1.0, abs=0.01)
    assert (stats.video_frames, stats.audio_frames) == (240, 376)
    assert stats.bytes_received == 240 * 2500 + 376 * 200


def test_the_window_forgets_what_arrived_before_it() -> None:
    stats = IngestStats()
    feed(stats, 100.0, 3)
    for n in range(20):  # then 20 s later, small frames only (a tenth of the size)
        stats.add(video(1000 + n, 125.0 + n / 30, size=250))
    assert stats.bitrate == pytest.approx(30 * 250 * 8, rel=0.1)  # the big frames are out
    assert stats.fps == pytest.approx(30, abs=0.1)
