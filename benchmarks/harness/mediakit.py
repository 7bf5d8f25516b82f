"""Real media for transcoder tests: ffmpeg CLI sources → MediaUnits → StreamHub → transcoder.

Sources are small (≤ 640×360, a few seconds) and cached per test session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ingest.hub import StreamHub
from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from transcode.ladder import LadderTranscoder
from transcode.output import EncodedPacket, QueueSink, RenditionInfo
from transcode.policy import LadderConfig, Rung

FFMPEG = shutil.which("ffmpeg")

#: A small ladder for tests: sources are 360×640 or smaller.
SMALL_RUNGS = (Rung.named("270p", "500k"), Rung.named("180p", "250k"))


def small_config(**overrides: Any) -> LadderConfig:
    base: dict[str, Any] = {"rungs": SMALL_RUNGS, "preset": "ultrafast", "passthrough": False}
    base.update(overrides)
    return LadderConfig(**base)


class SourceCache:
    """Makes (once per session) mp4 files with the Debian ffmpeg CLI."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made: dict[str, Path] = {}

    def make(
        self,
        video: str = "testsrc2",
        size: str = "360x640",
        rate: int = 30,
        duration: float = 3.0,
        gop: int = 60,
        bframes: int = 0,
        vcodec: str = "libx264",
        audio_rate: int | None = 48000,
        acodec: str = "aac",
        channels: int = 2,
        extra_video: str = "",
    ) -> Path:
        key = "_".join(
            str(x)
            for x in (
                video,
                size,
                rate,
                duration,
                gop,
                bframes,
                vcodec,
                audio_rate,
                acodec,
                channels,
                extra_video,
            )
        )
        key = "".join(c if c.isalnum() else "_" for c in key)
        if key in self._made:
            return self._made[key]
        assert FFMPEG is not None
        path = self.directory / f"{key}.mp4"
        source = f"{video}=size={size}:rate={rate}" if video != "lavfi" else extra_video
        cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source]
        if audio_rate is not None:
            cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={audio_rate}"]
        cmd += ["-t", str(duration), "-pix_fmt", "yuv420p", "-c:v", vcodec]
        if vcodec == "libx264":
            cmd += ["-preset", "ultrafast", "-bf", str(bframes)]
            cmd += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
        elif vcodec == "libsvtav1":
            cmd += ["-preset", "12", "-g", str(gop), "-svtav1-params", f"keyint={gop}"]
        elif vcodec == "libvpx-vp9":
            cmd += ["-deadline", "realtime", "-cpu-used", "8", "-g", str(gop)]
            cmd += ["-keyint_min", str(gop), "-b:v", "300k"]
        else:
            cmd += [
                "-preset",
                "ultrafast",
                "-x265-params",
                f"keyint={gop}:min-keyint={gop}:log-level=error",
            ]
        if audio_rate is not None:
            cmd += ["-c:a", acodec, "-ac", str(channels), "-b:a", "64k"]
        cmd.append(str(path))
        subprocess.run(cmd, check=True)
        self._made[key] = path
        return path


_CODEC_NAMES = {
    "h264": "h264",
    "hevc": "hevc",
    "libdav1d": "av1",
    "vp9": "vp9",
    "aac": "aac",
    "mp3": "mp3",
    "mp3float": "mp3",
}


def units_from_file(
    path: Path, *, offset_ms: int = 0, arrival: float | None = None
) -> list[MediaUnit]:
    """Configs first, then every packet in file (decode) order, with millisecond timestamps.

    AAC priming packets (negative pts) are left out, as an RTMP publisher would not send them.
    """
    now = time.time() if arrival is None else arrival
    units: list[MediaUnit] = []
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for stream in streams:
            kind = MediaKind.VIDEO if stream.type == "video" else MediaKind.AUDIO
            codec = _CODEC_NAMES[stream.codec_context.name]
            extradata = bytes(stream.codec_context.extradata or b"")
            units.append(MediaUnit(kind, codec, 0, 0, MILLISECONDS, False, extradata, now, True))
        for packet in container.demux(*streams):
            if packet.size == 0 or packet.pts is None or packet.dts is None:
                continue
            kind = MediaKind.VIDEO if packet.stream.type == "video" else MediaKind.AUDIO
            tb = packet.time_base
            pts = round(packet.pts * tb * 1000) + offset_ms
            dts = round(packet.dts * tb * 1000) + offset_ms
            if kind is MediaKind.AUDIO and packet.pts < 0:
                continue
            codec = _CODEC_NAMES[packet.stream.codec_context.name]
            units.append(
                MediaUnit(
                    kind, codec, pts, dts, MILLISECONDS, packet.is_keyframe, bytes(packet), now
                )
            )
    return units


def media(units: Sequence[MediaUnit], kind: MediaKind) -> list[MediaUnit]:
    return [u for u in units if u.kind is kind and not u.is_config]


def configs(units: Sequence[MediaUnit]) -> list[MediaUnit]:
    return [u for u in units if u.is_config]


def shifted(units: Sequence[MediaUnit], ms: int) -> list[MediaUnit]:
    return [dataclasses.replace(u, pts=u.pts + ms, dts=u.dts + ms) for u in units]


def end_ms(units: Sequence[MediaUnit]) -> int:
    """Where a unit list's media ends (last pts + one frame), to append another after it."""
    video = media(units, MediaKind.VIDEO)
    return max(u.pts for u in video) + 34


@dataclass
class Run:
    """One finished transcode: what the sink got, plus the transcoder for its stats."""

    transcoder: LadderTranscoder
    sink: QueueSink
    ladder: list[RenditionInfo]
    packets: dict[str, list[EncodedPacket]] = field(default_factory=dict)

    @property
    def infos(self) -> dict[str, RenditionInfo]:
        return self.sink.infos

    def video_names(self) -> list[str]:
        return [i.name for i in self.ladder if i.kind is MediaKind.VIDEO]


async def transcode(
    units: Sequence[MediaUnit],
    config: LadderConfig,
    *,
    midway: tuple[int, Any] | None = None,
) -> Run:
    """Publish ``units`` into a real hub as fast as the transcoder takes them, then end it.

    ``midway = (index, callback)``: publish up to ``index``, wait until the transcoder has
    produced video, call ``callback(transcoder)``, publish the rest.
    """
    hub = StreamHub("test", default_queue_size=1_000_000)
    reader = hub.add_reader("transcode")
    sink = QueueSink()
    transcoder = LadderTranscoder(reader, config, sink)
    await transcoder.start()
    split = len(units) if midway is None else midway[0]
    for unit in units[:split]:
        hub.publish(unit)
    if midway is not None:
        await asyncio.wait_for(sink.ladder, 60)
        name = next(i.name for i in sink.ladder.result() if i.kind is MediaKind.VIDEO)
        stats = transcoder.stats.rendition(name)
        seen = -1
        while stats.packets_out != seen:  # settled: everything published so far is out
            seen = stats.packets_out
            await asyncio.sleep(0.3)
        midway[1](transcoder)
        for unit in units[split:]:
            hub.publish(unit)
    hub.end()
    await asyncio.wait_for(transcoder.wait(), 300)
    await transcoder.close()
    run = Run(transcoder, sink, await sink.ladder)
    for name in list(sink.infos):
        run.packets[name] = sink.drain(name)
    return run


def decode_video(info: RenditionInfo, packets: Sequence[EncodedPacket]) -> list[av.VideoFrame]:
    """Decode a rendition with a fresh decoder configured only from its RenditionInfo.

    Raises on any decoder error; PyAV's h264 decoder is set to treat damage as an error.
    """
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = info.extradata
    decoder.options = {"err_detect": "explode"}
    frames: list[av.VideoFrame] = []
    for p in packets:
        packet = av.Packet(p.payload)
        packet.pts = p.pts
        packet.dts = p.dts
        packet.time_base = Fraction(1, info.timescale)
        frames += decoder.decode(packet)
    frames += decoder.decode(None)
    for frame in frames:
        assert not frame.is_corrupt
    return frames


def decode_audio(info: RenditionInfo, packets: Sequence[EncodedPacket]) -> int:
    """Decode an audio rendition; returns the number of samples."""
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = info.extradata
    samples = 0
    for p in packets:
        for frame in decoder.decode(av.Packet(p.payload)):
            samples += frame.samples
    return samples


def end_seconds(info: RenditionInfo, packets: Sequence[EncodedPacket]) -> Fraction:
    last = max(packets, key=lambda p: p.pts)
    return Fraction(last.pts + last.duration, info.timescale)


def start_seconds(info: RenditionInfo, packets: Sequence[EncodedPacket]) -> Fraction:
    return Fraction(min(p.pts for p in packets), info.timescale)
