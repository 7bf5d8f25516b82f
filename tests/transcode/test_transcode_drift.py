"""A/V sync over a long run, in fast mode (as fast as the machine transcodes, not real time)."""

from __future__ import annotations

from fractions import Fraction

from benchmarks.harness.mediakit import (
    SourceCache,
    configs,
    end_seconds,
    shifted,
    small_config,
    transcode,
    units_from_file,
)
from ingest.media import MediaUnit
from transcode.policy import Rung

#: 32 s holds a whole number of 30 fps frames (960) and of 1024-sample AAC frames at 48 kHz
#: (1500), so looping it with millisecond offsets is exactly what a long RTMP publish sends.
LOOP_SECONDS = 32
LOOPS = 19  # 608 s ≈ 10 minutes of media; takes ~15 s on two shared cores


async def test_ten_minutes_without_drift(sources: SourceCache) -> None:
    base = units_from_file(sources.make(size="72x128", duration=float(LOOP_SECONDS)))
    body = [u for u in base if not u.is_config]
    units: list[MediaUnit] = list(configs(base))
    for loop in range(LOOPS):
        units += shifted(body, LOOP_SECONDS * 1000 * loop)
    run = await transcode(units, small_config(rungs=(Rung.named("72p", "100k"),)))

    video = run.packets["72p"]
    audio = run.packets["audio"]
    frames = 30 * LOOP_SECONDS * LOOPS
    samples_per_loop = 48000 * LOOP_SECONDS // 1024
    assert len(video) == frames
    assert [p.pts for p in video] == [i * 3000 for i in range(frames)]
    assert len(audio) == samples_per_loop * LOOPS
    assert [p.pts for p in audio] == [i * 1024 for i in range(len(audio))]
    v_end = end_seconds(run.infos["72p"], video)
    a_end = end_seconds(run.infos["audio"], audio)
    assert v_end == a_end == LOOP_SECONDS * LOOPS
    keyframes = [p.pts for p in video if p.keyframe]
    assert keyframes == [i * 180000 for i in range(frames // 60)]
    assert not run.transcoder.stats.faults.counts
    assert Fraction(a_end) - Fraction(v_end) == 0
