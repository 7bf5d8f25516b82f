"""Switching a show to another input: the new input's transcoder output is held here until its
ladder is known to fit the show's renditions and an IDR at the same frame has come out of every
video rendition (the cue); then the package switches and what follows flows straight through."""

from __future__ import annotations

import asyncio
from fractions import Fraction

from ingest.media import MediaKind
from packager.live import LivePackage
from transcode.output import EncodedPacket, RenditionInfo

#: Keyframes of two renditions this close (seconds) are the same source frame (a passthrough
#: rung keeps millisecond timestamps, re-encoded rungs sit on the 1/fps grid).
_SAME_FRAME = Fraction(1, 50)
#: Packets held while waiting for the cue, at most (bounded memory should it never come).
_MAX_HELD = 4096
#: … and before any video keyframe came out (a warm standby's audio, for as long as it is held:
#: only the newest of it can follow the cue).
_MAX_HELD_BEFORE_KEYFRAME = 256


class SwitchRefused(Exception):
    """The input cannot take over (its ladder does not fit the show's renditions)."""


class SwitchCue:
    """The :class:`~transcode.output.TranscodeSink` of an input that is about to take over."""

    def __init__(self, package: LivePackage, input_name: str) -> None:
        self.package = package
        self.input = input_name
        #: Resolved with the cue time (session time of the aligned IDR), or SwitchRefused.
        self.ready: asyncio.Future[Fraction] = asyncio.get_running_loop().create_future()
        self.infos: dict[str, RenditionInfo] = {}
        self._held: list[EncodedPacket] = []
        self._keyframes: dict[str, list[Fraction]] = {}
        self._videos: list[str] = []
        #: An audio-only ladder: every AAC frame is a sync point, the cue is the newest one.
        self._audio_only = False
        self._forwarding = False
        self.ended = False

    # -- TranscodeSink -----------------------------------------------------------------
    def on_rendition(self, info: RenditionInfo) -> None:
        self.infos[info.name] = info

    def on_ladder(self, infos: list[RenditionInfo]) -> None:
        if self.ready.done():
            return
        try:
            self._check(infos)
        except SwitchRefused as exc:
            self.ready.set_exception(exc)
            return
        self._videos = [i.name for i in infos if i.kind is MediaKind.VIDEO]
        self._audio_only = not self._videos
        self._look_for_cue()

    def on_packet(self, packet: EncodedPacket) -> None:
        if self._forwarding:
            self.package.on_packet(packet)
            return
        if self.ready.done() and self.ready.exception() is not None:
            return  # refused: nothing of this input is used
        # Held also once cued: the old input's last frames are being listed meanwhile.
        self._held.append(packet)
        if len(self._held) > (_MAX_HELD if self._keyframes else _MAX_HELD_BEFORE_KEYFRAME):
            del self._held[0]
        info = self.infos.get(packet.rendition)
        if info is not None and info.kind is MediaKind.VIDEO and packet.keyframe:
            self._keyframes.setdefault(packet.rendition, []).append(
                Fraction(packet.pts, info.timescale)
            )
            self._look_for_cue()
        elif self._audio_only:
            self._look_for_cue()

    def on_end(self) -> None:
        self.ended = True
        if self._forwarding:
            self.package.on_end()
        elif not self.ready.done():
            self.ready.set_exception(SwitchRefused(f"input {self.input} stopped publishing"))

    # -- the cue -----------------------------------------------------------------------
    def _check(self, infos: list[RenditionInfo]) -> None:
        """The input must feed the same renditions (same sizes) and the same audio."""
        package = self.package
        ours = {
            r.name: (r.info.kind, r.info.width, r.info.height)
            for r in package.renditions.values()
            if r.info.kind is MediaKind.VIDEO
        }
        theirs = {i.name: (i.kind, i.width, i.height) for i in infos if i.kind is MediaKind.VIDEO}
        if not set(ours) <= set(theirs) or any(theirs[n] != ours[n] for n in ours):
            raise SwitchRefused(
                f"input {self.input} cannot feed this show's renditions: its ladder is "
                f"{_ladder(infos)}, the show's is {sorted(ours)}"
            )
        audio = next((i for i in infos if i.kind is MediaKind.AUDIO), None)
        have = package.audio
        if (audio is None) != (have is None) or (
            audio is not None
            and have is not None
            and (audio.sample_rate, audio.channels, audio.codec)
            != (have.sample_rate, have.channels, have.codec)
        ):
            raise SwitchRefused(
                f"input {self.input} has other audio than the show "
                f"({_audio(audio)} instead of {_audio(have)})"
            )

    def _look_for_cue(self) -> None:
        """The newest keyframe time every video rendition has: the switch frame (an audio-only
        show's: the newest AAC frame, each one a sync point)."""
        if self.ready.done():
            return
        if self._audio_only:
            for packet in reversed(self._held):
                info = self.infos.get(packet.rendition)
                if info is not None and info.kind is MediaKind.AUDIO:
                    self.ready.set_result(Fraction(packet.pts, info.timescale))
                    return
            return
        if not self._videos or any(n not in self._keyframes for n in self._videos):
            return
        lead, *others = self._videos
        for time in reversed(self._keyframes[lead]):
            if all(any(abs(t - time) <= _SAME_FRAME for t in self._keyframes[n]) for n in others):
                self.ready.set_result(time)
                return

    def take_over(self, start: Fraction) -> Fraction:
        """Switch the package to this input at ``start``; held media from that frame on goes
        out at once, later media as it comes. Returns the packaged time of the switch frame."""
        package = self.package
        inits: dict[str, list[RenditionInfo]] = {}
        for name, r in package.renditions.items():
            info = self.infos.get(name)
            if info is not None and info.extradata != r.info.extradata:
                inits[name] = [info, *([r.audio] if r.audio is not None else [])]
        switched = package.switch_input(self.input, start, inits)
        started: set[str] = set()  # video renditions at their switch IDR (decode order)
        for packet in self._held:
            info = self.infos[packet.rendition]
            at = Fraction(packet.pts, info.timescale)
            if info.kind is MediaKind.VIDEO:
                if packet.rendition not in started:
                    if not packet.keyframe or abs(at - start) > _SAME_FRAME:
                        continue
                    started.add(packet.rendition)
                package.on_packet(packet)
            elif at >= start - _SAME_FRAME:
                package.on_packet(packet)
        self._held.clear()
        self._forwarding = True
        if self.ended:
            package.on_end()
        return switched


def _ladder(infos: list[RenditionInfo]) -> list[str]:
    return sorted(f"{i.name} {i.width}x{i.height}" for i in infos if i.kind is MediaKind.VIDEO)


def _audio(info: RenditionInfo | None) -> str:
    if info is None:
        return "no audio"
    return f"{info.codec} {info.sample_rate} Hz, {info.channels} ch"
