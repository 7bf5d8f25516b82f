"""Opus on the hub (what WHIP publishes) → the transcoder's AAC-LC 48 kHz stereo rendition."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np

from benchmarks.harness.mediakit import decode_audio, small_config, transcode
from ingest.media import MediaKind, MediaUnit

RATE = 48_000
OPUS_FRAME = 960  # 20 ms, what browsers send


def opus_units(seconds: float, *, hole: tuple[int, int] | None = None) -> list[MediaUnit]:
    """A config unit naming the codec (WebRTC Opus has no record), then 20 ms Opus packets.

    ``hole = (index, samples)``: packets from ``index`` on come ``samples`` later (loss, DTX).
    """
    enc = av.CodecContext.create("libopus", "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = RATE, "stereo", "s16"
    enc.time_base = Fraction(1, RATE)
    units = [MediaUnit(MediaKind.AUDIO, "opus", 0, 0, Fraction(1, RATE), False, b"", 1.0, True)]
    for i in range(int(seconds * RATE) // OPUS_FRAME):
        t = np.arange(i * OPUS_FRAME, (i + 1) * OPUS_FRAME)
        tone = (np.sin(2 * np.pi * 440 * t / RATE) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = RATE
        frame.pts = i * OPUS_FRAME
        for packet in enc.encode(frame):
            ts = i * OPUS_FRAME + (hole[1] if hole is not None and i >= hole[0] else 0)
            units.append(
                MediaUnit(
                    MediaKind.AUDIO, "opus", ts, ts, Fraction(1, RATE), True, bytes(packet), 1.0
                )
            )
    return units


async def test_opus_becomes_back_to_back_aac_lc_48k_stereo() -> None:
    run = await transcode(opus_units(2.0), small_config())
    audio = run.infos["audio"]
    assert not audio.passthrough and audio.codec_string == "mp4a.40.2"
    assert (audio.sample_rate, audio.channels, audio.timescale) == (48000, 2, 48000)
    pts = [p.pts for p in run.packets["audio"]]
    assert all(b - a == 1024 for a, b in itertools.pairwise(pts))
    assert decode_audio(audio, run.packets["audio"]) >= RATE * 1.9
    assert not run.transcoder.stats.faults.counts


async def test_an_opus_gap_restarts_the_count_at_the_new_time() -> None:
    gap = RATE // 2  # 500 ms of lost packets: more than the sample clock's tolerance
    run = await transcode(opus_units(1.2, hole=(30, gap)), small_config())
    pts = [p.pts for p in run.packets["audio"]]
    steps = [b - a for a, b in itertools.pairwise(pts)]
    jumps = [s for s in steps if s != 1024]
    assert len(jumps) == 1 and abs(jumps[0] - (gap + 1024)) <= 2048, jumps
    assert pts[-1] >= 30 * OPUS_FRAME + gap


async def test_garbage_opus_is_counted_and_skipped() -> None:
    units = opus_units(1.0)
    bad = MediaUnit(MediaKind.AUDIO, "opus", units[20].pts + 1, units[20].pts + 1,
                    Fraction(1, RATE), True, b"\xff\xff\xff", 1.0)  # fmt: skip
    run = await transcode([*units[:21], bad, *units[21:]], small_config())
    assert run.transcoder.stats.faults["corrupt_audio"] >= 1
    assert decode_audio(run.infos["audio"], run.packets["audio"]) >= RATE * 0.9
