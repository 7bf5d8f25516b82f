"""LadderTranscoder end to end on real media: ffmpeg-made sources through a real StreamHub."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest

from benchmarks.harness.mediakit import (
    Run,
    SourceCache,
    configs,
    decode_audio,
    decode_video,
    end_ms,
    end_seconds,
    media,
    shifted,
    small_config,
    start_seconds,
    transcode,
    units_from_file,
)
from ingest.hub import StreamHub
from ingest.media import MediaKind, MediaUnit
from transcode.ladder import LadderTranscoder
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, QueueSink
from transcode.policy import Rung, VerticalMode, VerticalPolicy

FRAME = VIDEO_TIMESCALE // 30  # one 30 fps frame in 90 kHz ticks
BARS = (
    "color=c=red:s=640x360:r=30,"
    "drawbox=x=213:y=0:w=214:h=360:color=lime:t=fill,"
    "drawbox=x=427:y=0:w=213:h=360:color=blue:t=fill"
)


def check_video(
    run: Run,
    name: str,
    frames: int | None = None,
    timed_like: Sequence[EncodedPacket] = (),
    grid_from: int = 0,
) -> list[EncodedPacket]:
    """Exact even 9:16, constant 30 fps timestamps with no hole (or, with ``timed_like``, the
    timestamps of those packets frame for frame), decodes cleanly.

    Before ``grid_from`` (ticks) a rung may carry the source's timestamps (a passthrough check
    was pending): increasing, each within half a frame of its 30 fps slot.
    """
    info = run.infos[name]
    packets = run.packets[name]
    assert info.width * 16 == info.height * 9 and info.width % 2 == 0 and info.height % 2 == 0
    assert info.codec_string.startswith("avc1.")
    pts = [p.pts for p in packets]
    if timed_like:
        assert pts == [p.pts for p in timed_like], "not on the source's timestamps"
    else:
        early = [t for t in pts if t < grid_from]
        assert all(a < b for a, b in itertools.pairwise(pts)), "not increasing"
        assert all(abs(t - (pts[0] + i * FRAME)) <= FRAME // 2 for i, t in enumerate(early))
        on_grid = pts[len(early) :]
        assert all(b - a == FRAME for a, b in itertools.pairwise(on_grid)), "holes or repeats"
    assert all(p.dts == p.pts and p.duration == FRAME for p in packets)
    assert packets[0].keyframe
    if frames is not None:
        assert abs(len(packets) - frames) <= 1
    decoded = decode_video(info, packets)
    assert len(decoded) == len(packets)
    assert {(f.width, f.height) for f in decoded} == {(info.width, info.height)}
    return packets


def idr_pts(packets: Sequence[EncodedPacket]) -> list[int]:
    return [p.pts for p in packets if p.keyframe]


def check_av_end_together(run: Run, video: str = "270p", slack: Fraction = Fraction(0)) -> None:
    v_end = end_seconds(run.infos[video], run.packets[video])
    a_end = end_seconds(run.infos["audio"], run.packets["audio"])
    assert abs(v_end - a_end) <= Fraction(1, 30) + slack, (float(v_end), float(a_end))


def centre_rgb(frame: object) -> tuple[int, int, int]:
    rgb = frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
    h, w, _ = rgb.shape
    r, g, b = rgb[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4].reshape(-1, 3).mean(axis=0)
    return int(r), int(g), int(b)


def dominant(rgb: tuple[int, int, int]) -> str:
    return ("red", "green", "blue")[int(np.argmax(rgb))] if max(rgb) > 150 else "dark"


async def test_portrait_source_gets_rungs_up_to_its_size_with_aligned_idrs(
    sources: SourceCache,
) -> None:
    units = units_from_file(sources.make(size="360x640", duration=6.0))
    config = small_config(rungs=(Rung.named("540p", "1M"), *small_config().rungs))
    run = await transcode(units, config)
    assert run.video_names() == ["270p", "180p"]  # 540p would be an upscale
    assert [i.name for i in run.ladder] == ["270p", "180p", "audio"]
    for name in ("270p", "180p"):
        check_video(run, name, frames=180)
        assert idr_pts(run.packets[name]) == [0, 60 * FRAME, 120 * FRAME]
        assert run.transcoder.stats.rendition(name).lag.count == 180
    audio = run.infos["audio"]
    assert audio.passthrough and audio.codec_string == "mp4a.40.2"
    assert audio.sample_rate == audio.timescale == 48000 and audio.channels == 2
    assert decode_audio(audio, run.packets["audio"]) == 1024 * len(run.packets["audio"])
    check_av_end_together(run)
    assert not run.transcoder.stats.faults.counts


async def test_landscape_is_centre_cropped(sources: SourceCache) -> None:
    units = units_from_file(sources.make(video="lavfi", extra_video=BARS, duration=1.0))
    run = await transcode(units, small_config())
    assert run.video_names() == ["180p"]  # 640×360 crops to 202×360: 270p would upscale
    frames = decode_video(run.infos["180p"], check_video(run, "180p", frames=30))
    rgb = frames[-1].to_ndarray(format="rgb24")
    # The crop (x 218..420) lies inside the green centre bar: no red or blue anywhere.
    assert dominant(centre_rgb(frames[-1])) == "green"
    assert rgb[:, :, 0].max() < 100 and rgb[:, :, 2].max() < 100


async def test_crop_focus_from_config_and_while_live(sources: SourceCache) -> None:
    units = units_from_file(sources.make(video="lavfi", extra_video=BARS, duration=2.0))
    run = await transcode(units, small_config(vertical=VerticalPolicy(focus=0.0)))
    assert dominant(centre_rgb(decode_video(run.infos["180p"], run.packets["180p"])[0])) == "red"

    def move_right(transcoder: LadderTranscoder) -> None:
        transcoder.set_focus(1.0)

    run = await transcode(units, small_config(), midway=(len(units) // 2, move_right))
    frames = decode_video(run.infos["180p"], check_video(run, "180p", frames=60))
    assert dominant(centre_rgb(frames[0])) == "green"
    assert dominant(centre_rgb(frames[-1])) == "blue"


async def test_pad_mode_letterboxes(sources: SourceCache) -> None:
    units = units_from_file(sources.make(video="lavfi", extra_video=BARS, duration=1.0))
    run = await transcode(units, small_config(vertical=VerticalPolicy(VerticalMode.PAD)))
    # The whole 640×360 picture fits 270p without upscaling (270×152 inside 270×480).
    assert run.video_names() == ["270p", "180p"]
    frame = decode_video(run.infos["180p"], check_video(run, "180p", frames=30))[-1]
    rgb = frame.to_ndarray(format="rgb24")
    assert rgb[:100].max() < 40 and rgb[-100:].max() < 40  # bars: picture is rows 110..210
    middle = rgb[160]
    assert dominant(tuple(middle[10:50].mean(axis=0).astype(int))) == "red"
    assert dominant(tuple(middle[80:100].mean(axis=0).astype(int))) == "green"
    assert dominant(tuple(middle[130:170].mean(axis=0).astype(int))) == "blue"


async def test_60fps_source_is_halved_to_30(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="180x320", rate=60, duration=2.0, gop=120))
    run = await transcode(units, small_config())
    assert run.infos["180p"].fps == 30
    packets = check_video(run, "180p", frames=60)
    assert idr_pts(packets) == [0]
    check_av_end_together(run, "180p")


async def test_vfr_source_comes_out_at_constant_30fps(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="180x320", duration=4.0, audio_rate=None))
    rng = np.random.default_rng(7)
    video = media(units, MediaKind.VIDEO)
    vfr: list[MediaUnit] = list(configs(units))
    stall = 0
    for index, unit in enumerate(video):
        if index == 40:
            stall = 250  # the phone stalled for a quarter second
        jitter = int(rng.integers(-9, 10)) if index else 0
        vfr.append(
            dataclasses.replace(unit, pts=unit.pts + jitter + stall, dts=unit.dts + jitter + stall)
        )
    run = await transcode(vfr, small_config())
    span = Fraction(vfr[-1].pts - vfr[1].pts, 1000)
    packets = check_video(run, "180p", frames=round(span * 30) + 1)
    assert run.transcoder.stats.slots_repeated >= 6
    assert idr_pts(packets)[:2] == [0, 60 * FRAME]


async def test_b_frame_source(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="360x640", duration=3.0, bframes=3))
    video = media(units, MediaKind.VIDEO)
    assert any(u.pts != u.dts for u in video)
    run = await transcode(units, small_config())
    for name in ("270p", "180p"):
        packets = check_video(run, name, frames=90)
    # Origin is the first DTS, so the first picture lands a reorder delay after 0.
    first = run.packets["270p"][0].pts
    assert idr_pts(run.packets["270p"]) == idr_pts(run.packets["180p"])
    assert idr_pts(packets)[1] == 60 * FRAME and first < 60 * FRAME
    check_av_end_together(run)


async def test_lower_rungs_scaled_from_the_top_rung_match_scaling_from_the_source(
    sources: SourceCache,
) -> None:
    # Landscape, centre-cropped, detailed: a lower rung cropping the top rung's picture again,
    # or scaling another frame, would show another picture.
    units = units_from_file(sources.make(size="640x360", duration=2.0))
    config = small_config(rungs=(Rung.named("180p", "400k"), Rung.named("90p", "150k")))
    cascade = await transcode(units, config)
    direct = await transcode(units, dataclasses.replace(config, cascade_scaling=False))
    assert cascade.video_names() == direct.video_names() == ["180p", "90p"]
    for name in ("180p", "90p"):
        packets = check_video(cascade, name, frames=60)
        assert [p.pts for p in packets] == [p.pts for p in direct.packets[name]]
        assert idr_pts(packets) == idr_pts(direct.packets[name])
    pictures = zip(
        decode_video(cascade.infos["90p"], cascade.packets["90p"]),
        decode_video(direct.infos["90p"], direct.packets["90p"]),
        strict=True,
    )
    for ours, reference in pictures:
        a = ours.to_ndarray(format="rgb24").astype(np.float64)
        b = reference.to_ndarray(format="rgb24").astype(np.float64)
        # Measured ≥ 43 dB; the crop moved by 5 % of the width gives 9 dB.
        assert 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-9)) > 30
    assert not cascade.transcoder.stats.faults.counts


async def test_resolution_and_orientation_change_keeps_the_outputs(sources: SourceCache) -> None:
    portrait = units_from_file(sources.make(size="360x640", duration=2.0))
    landscape = units_from_file(sources.make(video="lavfi", extra_video=BARS, duration=2.0))
    units = portrait + shifted(landscape, end_ms(portrait))
    run = await transcode(units, small_config())
    assert run.video_names() == ["270p", "180p"]
    for name in ("270p", "180p"):
        check_video(run, name, frames=120)
    frames = decode_video(run.infos["270p"], run.packets["270p"])
    assert dominant(centre_rgb(frames[-1])) == "green"  # the landscape part, centre-cropped
    assert not run.transcoder.stats.faults.counts


async def test_corrupt_nal_units_are_skipped_to_the_next_idr(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="180x320", duration=6.0))
    video_at = [i for i, u in enumerate(units) if u.kind is MediaKind.VIDEO and not u.is_config]
    broken = list(units)
    zeroed = units[video_at[20]]
    broken[video_at[20]] = dataclasses.replace(
        zeroed, payload=zeroed.payload[:5] + bytes(len(zeroed.payload) - 5)
    )
    bad_length = units[video_at[70]]
    broken[video_at[70]] = dataclasses.replace(
        bad_length, payload=b"\xff\xff\xff\xff" + bad_length.payload[4:]
    )
    run = await transcode(broken, small_config())
    faults = run.transcoder.stats.faults
    assert faults["corrupt_video"] >= 2
    # Frames 20..59 and 70..119 are skipped; repeats fill them: no stall, no hole.
    check_video(run, "180p", frames=180)
    assert run.transcoder.stats.slots_repeated == 40 + 50
    check_av_end_together(run, "180p")


async def test_missing_sps_then_recovery(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="180x320", duration=4.0))
    good = configs(units)[0]
    assert good.kind is MediaKind.VIDEO
    pps = good.payload[-4:]
    no_sps = bytes([1, 0x42, 0xC0, 0x0D, 0xFF, 0xE0, 1, 0, len(pps)]) + pps
    units[0] = dataclasses.replace(good, payload=no_sps)
    second_gop = [i for i, u in enumerate(units) if u.kind is MediaKind.VIDEO and u.keyframe][1]
    units.insert(second_gop, good)
    run = await transcode(units, small_config())
    faults = run.transcoder.stats.faults
    assert faults["bad_config"] == 1 and faults["missing_config"] >= 59
    packets = check_video(run, "180p", frames=60)
    assert packets[0].pts == 60 * FRAME  # video starts at the first decodable IDR
    assert start_seconds(run.infos["audio"], run.packets["audio"]) == 0
    check_av_end_together(run, "180p")


async def test_timestamp_jump_back_is_rebased_for_both_tracks(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="180x320", duration=4.0))
    half = len(units) // 2
    jumped = units[:half] + shifted(units[half:], -100_000)  # publisher clock reset
    run = await transcode(jumped, small_config())
    assert run.transcoder.stats.faults["timestamp_jump"] == 2
    check_video(run, "180p", frames=120)
    audio = [p.pts for p in run.packets["audio"]]
    assert all(b - a == 1024 for a, b in itertools.pairwise(audio))
    check_av_end_together(run, "180p")


async def test_hevc_source(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="360x640", duration=2.0, vcodec="libx265"))
    assert configs(units)[0].codec == "hevc"
    run = await transcode(units, small_config(passthrough=True))
    assert run.video_names() == ["270p", "180p"]  # HEVC is never passed through
    check_video(run, "270p", frames=60)


async def test_av1_source(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="360x640", duration=2.0, vcodec="libsvtav1"))
    assert configs(units)[0].codec == "av1"
    run = await transcode(units, small_config(passthrough=True))
    assert run.video_names() == ["270p", "180p"]  # decoded with dav1d into the H.264 ladder
    assert run.infos["270p"].codec == "h264"
    check_video(run, "270p", frames=60)
    assert not run.transcoder.stats.faults.counts


async def test_passthrough_rung_is_the_source_retimed(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="270x480", duration=4.0))
    run = await transcode(units, small_config(passthrough=True))
    assert [(i.name, i.passthrough) for i in run.ladder if i.kind is MediaKind.VIDEO] == [
        ("270p", True),
        ("180p", False),
    ]
    source = media(units, MediaKind.VIDEO)
    passed = run.packets["270p"]
    assert [p.payload for p in passed] == [u.payload for u in source]
    assert [p.pts for p in passed] == [u.pts * 90 for u in source]
    assert run.infos["270p"].extradata == configs(units)[0].payload
    assert sum(p.duration for p in passed[:-1]) == passed[-1].dts - passed[0].dts
    # The encoded rung keeps the source's timestamps too (not the 30 fps grid, up to half a
    # frame off them): every rendition has the same part boundaries for a switching player.
    encoded = check_video(run, "180p", frames=120, timed_like=passed)
    assert idr_pts(passed) == idr_pts(encoded) == [0, 180000]
    assert len(decode_video(run.infos["270p"], passed)) == len(source)


async def test_passthrough_only_ladder(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="270x480", duration=2.0))
    run = await transcode(units, small_config(rungs=(), passthrough=True))
    assert [i.name for i in run.ladder] == ["270p", "audio"]
    assert run.infos["270p"].passthrough and len(run.packets["270p"]) == 60


async def test_passthrough_only_ladder_stops_decoding_once_final(
    sources: SourceCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="transcode")
    units = units_from_file(sources.make(size="270x480", duration=6.0))  # 3 GOPs of 60
    run = await transcode(units, small_config(rungs=(), passthrough=True))
    source = media(units, MediaKind.VIDEO)
    passed = run.packets["270p"]
    assert [p.payload for p in passed] == [u.payload for u in source]
    assert [p.pts for p in passed] == [u.pts * 90 for u in source]
    # Decoded: the planning frames and the first GOP (until the second keyframe tells the
    # GOP fits); nothing after the ladder is final, and the rest went by on the event loop.
    assert 60 <= run.transcoder.stats.frames_decoded <= 60 + 6
    assert "passthrough only: the event loop passes the source on" in caplog.text
    assert not run.transcoder.stats.faults.counts


class FailingOnce(QueueSink):
    """A sink whose ``on_packet`` fails for one packet of each rendition in ``fail``."""

    def __init__(self, fail: dict[str, int]) -> None:
        super().__init__()
        self.fail = dict(fail)  # rendition → index of the packet that fails
        self.seen: dict[str, int] = {}

    def on_packet(self, packet: EncodedPacket) -> None:
        index = self.seen[packet.rendition] = self.seen.get(packet.rendition, -1) + 1
        if self.fail.get(packet.rendition) == index:
            raise RuntimeError(f"sink failed at {packet.rendition} {index}")
        super().on_packet(packet)


async def test_a_sink_failure_on_the_loop_is_reported_and_routing_goes_on(
    sources: SourceCache,
) -> None:
    """Passthrough packets reach the sink at once on the loop (no call_soon): a sink's
    exception still goes to the loop's exception handler, and the stream goes on."""
    units = units_from_file(sources.make(size="270x480", duration=6.0))
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
    try:
        hub = StreamHub("failing", default_queue_size=1_000_000)
        sink = FailingOnce({"audio": 5, "270p": 150})  # 270p: after the hand-over (frame 120)
        transcoder = LadderTranscoder(
            hub.add_reader("transcode"), small_config(rungs=(), passthrough=True), sink
        )
        await transcoder.start()
        for unit in units:
            hub.publish(unit)
        hub.end()
        await asyncio.wait_for(transcoder.wait(), 60)
    finally:
        loop.set_exception_handler(None)
    assert sorted(str(e) for e in errors) == ["sink failed at 270p 150", "sink failed at audio 5"]
    assert len(sink.drain("270p")) == 180 - 1
    assert len(sink.drain("audio")) == sink.seen["audio"]  # every other one, in order


async def test_passthrough_refused_for_long_gops_falls_back_to_encoding(
    sources: SourceCache,
) -> None:
    units = units_from_file(sources.make(size="270x480", duration=6.0, gop=90))
    run = await transcode(units, small_config(passthrough=True))
    assert [(i.name, i.passthrough) for i in run.ladder if i.kind is MediaKind.VIDEO] == [
        ("270p", False),
        ("180p", False),
    ]
    # The check fails 2.05 s in (no second keyframe); 270p starts on the next GOP boundary.
    # 180p kept the source's timestamps while the check was pending, the 30 fps grid after.
    assert idr_pts(check_video(run, "270p", frames=60))[0] == 120 * FRAME
    encoded = check_video(run, "180p", frames=180, grid_from=int(2.1 * VIDEO_TIMESCALE))
    assert idr_pts(encoded) == [0, 60 * FRAME, 120 * FRAME]


@pytest.mark.parametrize(
    ("rate", "channels", "codec"), [(22050, 1, "aac"), (44100, 2, "libmp3lame")]
)
async def test_audio_that_cannot_pass_is_reencoded_to_aac_lc_48k_stereo(
    sources: SourceCache, rate: int, channels: int, codec: str
) -> None:
    units = units_from_file(
        sources.make(size="180x320", duration=3.0, audio_rate=rate, channels=channels, acodec=codec)
    )
    if codec == "libmp3lame":  # FLV sends MP3 without a configuration unit
        units = [u for u in units if not (u.is_config and u.kind is MediaKind.AUDIO)]
    run = await transcode(units, small_config())
    audio = run.infos["audio"]
    assert not audio.passthrough and audio.codec_string == "mp4a.40.2"
    assert (audio.sample_rate, audio.channels, audio.timescale) == (48000, 2, 48000)
    assert audio.encoder_delay == 1024
    pts = [p.pts for p in run.packets["audio"]]
    assert all(b - a == 1024 for a, b in itertools.pairwise(pts))
    assert decode_audio(audio, run.packets["audio"]) >= 48000 * 2.9
    # Slack: the source's own last frame is padded (1024 AAC / 1152 MP3 samples at its rate)
    # and the AAC encoder's flush adds up to one padded frame at the end.
    source_frame = Fraction(1152 if codec == "libmp3lame" else 1024, rate)
    check_av_end_together(run, "180p", source_frame + Fraction(1024, 48000))


async def test_bitrate_over_10s_is_within_15_percent(sources: SourceCache) -> None:
    units = units_from_file(sources.make(size="180x320", duration=10.0, audio_rate=None))
    rung = Rung.named("180p", "300k")
    run = await transcode(units, small_config(rungs=(rung,), preset="veryfast"))
    packets = check_video(run, "180p", frames=300)
    bits = 8 * sum(len(p.payload) for p in packets)
    rate = bits / 10.0
    assert abs(rate - rung.bitrate) <= 0.15 * rung.bitrate, rate


async def test_close_while_live_flushes_every_encoder(sources: SourceCache) -> None:
    from ingest.hub import StreamHub
    from transcode.output import QueueSink

    units = units_from_file(sources.make(size="180x320", duration=2.0))
    hub = StreamHub("live", default_queue_size=100_000)
    sink = QueueSink()
    transcoder = LadderTranscoder(hub.add_reader("t"), small_config(), sink)
    await transcoder.start()
    for unit in units:
        hub.publish(unit)
    await sink.ladder
    while transcoder.stats.rendition("180p").packets_out < 60:
        import asyncio

        await asyncio.sleep(0.05)
    await transcoder.close()  # the hub never ended
    assert sink.ended.is_set()
    assert len(sink.drain("180p")) == 60


async def test_warm_standby_encodes_nothing_then_every_rung_cuts_an_idr_at_the_next_frame(
    sources: SourceCache,
) -> None:
    """A warm standby decodes (and plans) but sends no video until it goes on air; then every
    rung, the passthrough candidate's size included, starts at the same frame with an IDR,
    though that frame is no source keyframe, and cuts the next IDR one GOP later."""
    units = units_from_file(sources.make(size="270x480", duration=6.0, gop=150))
    hub = StreamHub("test", default_queue_size=1_000_000)
    sink = QueueSink()
    transcoder = LadderTranscoder(
        hub.add_reader("standby"), small_config(passthrough=True), sink, standby=True
    )
    await transcoder.start()
    source = media(units, MediaKind.VIDEO)
    # Mid-GOP: frame 75 of a 150-frame source GOP.
    split = units.index(source[75])
    for unit in units[:split]:
        hub.publish(unit)
    seen = -1
    while transcoder.stats.frames_decoded != seen:  # settled: all published so far decoded
        seen = transcoder.stats.frames_decoded
        await asyncio.sleep(0.3)
    assert seen >= 70 and transcoder.standby
    ladder = await asyncio.wait_for(sink.ladder, 10)
    videos = [i.name for i in ladder if i.kind is MediaKind.VIDEO]
    assert videos == ["270p", "180p"]
    assert not any(i.passthrough for i in ladder if i.kind is MediaKind.VIDEO)
    assert all(not sink.drain(name) for name in videos), "video encoded while warm"
    transcoder.go_on_air()
    assert not transcoder.standby
    for unit in units[split:]:
        hub.publish(unit)
    hub.end()
    await asyncio.wait_for(transcoder.wait(), 300)
    await transcoder.close()
    source_keys = {u.pts * 90 for u in source if u.keyframe}
    firsts = set()
    for name in videos:
        packets = sink.drain(name)
        assert packets and packets[0].keyframe, name
        firsts.add(packets[0].pts)
        assert idr_pts(packets)[:2] == [packets[0].pts, packets[0].pts + 60 * FRAME], name
        assert len(decode_video(sink.infos[name], packets)) == len(packets)
    [first] = firsts  # the same frame on every rung
    assert first not in source_keys and first >= 75 * FRAME, (first, sorted(source_keys))


async def test_close_beside_a_running_run_ends_it_without_stranding_a_put(
    sources: SourceCache,
) -> None:
    """``close()`` while ``run()`` is awaited in another task (as the pipelines do) with a
    backlog queued: the running task ends too, rather than feeding a finished decode thread
    until a put into its full queue waits for ever."""
    units = units_from_file(sources.make(size="360x640", duration=6.0))
    hub = StreamHub("test", default_queue_size=1_000_000)
    sink = QueueSink()
    transcoder = LadderTranscoder(hub.add_reader("transcode"), small_config(), sink)
    running = asyncio.create_task(transcoder.run())
    for unit in units:  # the whole backlog at once, the publisher still on
        hub.publish(unit)
    await asyncio.wait_for(sink.ladder, 60)
    await transcoder.close()
    await asyncio.wait_for(asyncio.wait({running}), 60)  # (a generous bound: liveness)
    assert running.done()
