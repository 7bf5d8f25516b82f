"""Playing the slate out: each rendition's pre-encoded slate GOP and silent AAC frame, looped
and re-timed on the slate's own session timeline (sans-I/O: the caller says how far to go)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from transcode.output import EncodedPacket
from transcode.slate import SlateClip


@dataclass
class SlateLoop:
    """One rendition's slate, played from session time 0 on."""

    name: str
    clip: SlateClip
    audio_name: str
    frames: int = 0  # video packets handed out
    audio_frames: int = 0

    def video_until(self, until: Fraction, arrival: float) -> Iterator[EncodedPacket]:
        """Video packets whose decode time is at most ``until`` seconds, not handed out yet."""
        clip = self.clip
        if not clip.video or clip.video_info is None:
            return
        scale = clip.video_info.timescale
        limit = until * scale
        count = len(clip.video)
        while True:
            loop, index = divmod(self.frames, count)
            packet = clip.video[index]
            shift = loop * clip.loop_ticks
            if packet.dts + shift > limit:
                return
            self.frames += 1
            yield EncodedPacket(
                self.name,
                packet.pts + shift,
                packet.dts + shift,
                packet.duration,
                packet.keyframe,
                packet.payload,
                arrival,
            )

    def audio_until(self, until: Fraction, arrival: float) -> Iterator[EncodedPacket]:
        """Silent AAC frames starting before ``until`` seconds, not handed out yet."""
        clip = self.clip
        if clip.audio_info is None or not clip.silence_samples:
            return
        limit = until * clip.audio_info.timescale
        while self.audio_frames * clip.silence_samples < limit:
            start = self.audio_frames * clip.silence_samples
            self.audio_frames += 1
            yield EncodedPacket(
                self.audio_name,
                start,
                start,
                clip.silence_samples,
                True,
                clip.silence,
                arrival,
            )

    @property
    def newest_time(self) -> Fraction:
        """Session time of the newest lead frame handed out (0 before the first)."""
        clip = self.clip
        if clip.video and clip.video_info is not None:
            if not self.frames:
                return Fraction(0)
            loop, index = divmod(self.frames - 1, len(clip.video))
            ticks = clip.video[index].pts + loop * clip.loop_ticks
            return Fraction(ticks, clip.video_info.timescale)
        if clip.audio_info is None or not self.audio_frames:
            return Fraction(0)
        ticks = (self.audio_frames - 1) * clip.silence_samples
        return Fraction(ticks, clip.audio_info.timescale)
