"""LadderTranscoder: one stream's hub reader in, every rendition's packets out.

Life cycle (like every shopcast component): ``start()`` → runs until the hub ends the stream
(or ``close()``) → encoders flushed → ``sink.on_end()``. ``run()`` is the same, awaited in place.

The event loop only routes units and repairs timestamps; decoding, scaling and encoding run in
worker threads (see :mod:`transcode.video`, :mod:`transcode.audio`) and their output comes back
through ``loop.call_soon_threadsafe``. A ladder of the passthrough rung alone decodes only until
it is final; its source is then passed on by the loop itself (no thread hop per unit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any, TypeVar

from ingest.hub import HubReader
from ingest.media import MediaKind, MediaUnit
from transcode.audio import AudioTrack
from transcode.output import QueueSink, RenditionInfo, SinkBridge, TranscodeSink
from transcode.policy import LadderConfig, VerticalPolicy
from transcode.stats import FaultLog, TranscodeStats
from transcode.timeline import RepairedTime, StreamTimeline
from transcode.video import SourceDecoder
from transcode.video.decoder import HAND_OVER, _HandOver, _VideoItem

log = logging.getLogger(__name__)

_T = TypeVar("_T")
#: Seconds of audio with no video unit at all before a stream is taken as audio-only.
AUDIO_ONLY_AFTER = Fraction(1)


class LadderTranscoder:
    """Decode once, vertical crop/pad, encode the configured ladder, pass audio/video through.

    ``sink`` receives the output (see :mod:`transcode.output` for the call contract); by default
    a :class:`QueueSink` with one ``asyncio.Queue`` per rendition (construct inside a running
    loop then). ``set_focus()`` moves the crop while live.
    """

    def __init__(
        self,
        reader: HubReader,
        config: LadderConfig | None = None,
        sink: TranscodeSink | None = None,
        *,
        name: str | None = None,
        gop_known: bool = False,
        audio_like: RenditionInfo | None = None,
        video_like: Sequence[tuple[str, int, int]] = (),
        standby: bool = False,
        audio_only: bool = False,
    ) -> None:
        self.reader = reader
        #: Feeding an audio-only show (a switch): the ladder is final at the first audio frame
        #: and video, if any, is not decoded.
        self.audio_only = audio_only
        #: A warm standby decodes its source (off the loop) and plans its ladder but encodes
        #: nothing until :meth:`go_on_air`; then every rung starts at the next frame, an IDR on
        #: each, without waiting for a source keyframe. Its top rung is encoded, never passed
        #: through (a source IDR cannot be had at that frame).
        self._on_air: threading.Event | None = threading.Event() if standby else None
        #: The show's video renditions ``(name, width, height)`` to feed whatever this source's
        #: format (a switch or re-plan); () = a ladder planned from the source.
        self.video_like = tuple(video_like)
        #: The audio rendition's required format (see :class:`~transcode.audio.AudioTrack`).
        self.audio_like = audio_like
        #: The source's keyframes are known to be at most a segment apart (measured at ingest,
        #: e.g. an input held for a switch): the passthrough rung need not wait for a second one.
        self.gop_known = gop_known
        self.config = config or LadderConfig()
        self.sink: TranscodeSink = sink if sink is not None else QueueSink()
        self.name = name or reader.hub.stream_id
        self._prefix = f"[transcode {self.name}]"
        self.stats = TranscodeStats(FaultLog(log, self._prefix))
        # Longer than any hub drop (the reader skips at most to the next keyframe), so a real
        # jump is told apart from lost units, which must keep their timestamps.
        self.timeline = StreamTimeline(
            max_gap=Fraction(max(5, 2 * round(self.config.segment_duration)))
        )
        self._vertical = self.config.vertical
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Task[Any] | None = None  # the task in ``run()``
        self._video: SourceDecoder | None = None
        # Passthrough only: video units go to the decoder on the loop once its thread handed
        # over; those arriving between the request and the hand-over wait here, in order.
        self._video_on_loop = False
        self._hand_over_asked = False
        self._waiting_video: list[tuple[MediaUnit, RepairedTime | None]] = []
        self._audio: AudioTrack | None = None
        self._video_ladder: list[RenditionInfo] | None = None
        self._bridge: SinkBridge | None = None
        self._finished = False
        self._audio_started: Fraction | None = None

    # --- control -------------------------------------------------------------------------

    @property
    def vertical(self) -> VerticalPolicy:
        return self._vertical

    def set_focus(self, focus: float) -> None:
        """Move the crop window (0 = left edge, 1 = right edge) from the next frame on."""
        self._vertical = replace(self._vertical, focus=focus)

    def set_vertical(self, policy: VerticalPolicy) -> None:
        """Switch crop/pad (and focus) while live; rungs rebuild their scaler on the next frame."""
        self._vertical = policy

    @property
    def standby(self) -> bool:
        """A warm standby not on air yet."""
        return self._on_air is not None and not self._on_air.is_set()

    def go_on_air(self) -> None:
        """A warm standby's rungs start encoding at the next decoded frame (an IDR on each)."""
        if self._on_air is not None:
            self._on_air.set()

    @property
    def renditions(self) -> list[RenditionInfo]:
        """The final ladder (empty until it is known)."""
        return list(self._video_ladder or [])

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading the hub in a task; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"transcode-{self.name}")

    async def wait(self) -> None:
        """Until the stream ended and every encoder was flushed."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop reading, flush every encoder, deliver what they had; idempotent."""
        # Also ``run()`` awaited in another task: finishing beside it would end the decode
        # thread while that task still feeds it (a put into its full queue would never return).
        task = self._task or self._running
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            await self._finish()
        self.reader.close()

    async def run(self) -> None:
        """Process the stream until the hub ends it, then flush (also when cancelled)."""
        self._bridge = SinkBridge(asyncio.get_running_loop(), self.sink)
        self._running = asyncio.current_task()
        reader, stats, route = self.reader, self.stats, self._route
        try:
            while (unit := await reader.get()) is not None:
                stats.units_in += 1
                full = route(unit)
                if full is not None:
                    # The decode thread's queue is full: wait for room (back-pressure), with
                    # the loop free meanwhile; the next unit only after this one.
                    assert self._video is not None
                    await asyncio.to_thread(self._video.input.put, full)
        finally:
            await self._finish()

    # --- routing -------------------------------------------------------------------------

    def _route(self, unit: MediaUnit) -> _VideoItem | _HandOver | None:
        """Route one unit; returns what the decode thread's full queue could not take.

        Not a coroutine: almost every unit is routed without waiting (a coroutine per unit
        was measurable per passthrough publisher); the caller awaits the rare full queue.
        """
        assert self._bridge is not None
        at = None
        if not unit.is_config:
            at = self.timeline.place(unit)
            if at.jumped:
                self.stats.faults.record(
                    "timestamp_jump", f"{unit.kind.value} DTS {unit.dts} rebased to continue"
                )
        if unit.kind is MediaKind.VIDEO:
            if self.audio_only:
                return None
            if self._video is None:
                self._video = SourceDecoder(
                    self.config,
                    lambda: self._vertical,
                    self._bridge,
                    self.stats,
                    self._on_video_ladder,
                    self._prefix,
                    self._on_video_handed_over,
                    self.video_like,
                    self._on_air,
                )
                if self.gop_known:
                    self._video.passthrough.gop_ok = True  # before it sees any unit
            if self._video_on_loop:
                self._video.feed(unit, at)
            elif self._hand_over_asked:
                self._waiting_video.append((unit, at))
            elif not self._video.decoding:
                # Nothing decodes any more: no need for a thread hop per unit. (The unit waits
                # for the hand-over, which the thread runs only once this put is done.)
                self._hand_over_asked = True
                self._waiting_video.append((unit, at))
                return _put_nowait(self._video.input, HAND_OVER)
            else:
                return _put_nowait(self._video.input, (unit, at))
            return None
        if self._audio is None:
            self._audio = AudioTrack(self.config, self._bridge, self.stats, self.audio_like)
        if unit.is_config:
            self._audio.configure(unit)
        elif at is not None:
            self._audio.offer(unit, at)
            if self._video is None and self._video_ladder is None:
                self._maybe_audio_only(at.dts)
        return None

    def _maybe_audio_only(self, audio_time: Fraction) -> None:
        """An audio-only source: once a second of audio came with no video at all, the ladder
        is final (just the audio rendition), so playlists go live instead of waiting forever."""
        if self._video is not None or self._video_ladder is not None or self._audio is None:
            return
        if self._audio_started is None:
            self._audio_started = audio_time
        known = self.audio_only or audio_time - self._audio_started >= AUDIO_ONLY_AFTER
        if known and self._audio.info is not None:
            self._video_ladder = [self._audio.info]
            self.sink.on_ladder(self._video_ladder)

    def _on_video_handed_over(self) -> None:
        if self._video is None or self._video_on_loop:
            return
        self._video_on_loop = True
        waiting, self._waiting_video = self._waiting_video, []
        for unit, at in waiting:
            self._video.feed(unit, at)

    def _on_video_ladder(self, infos: list[RenditionInfo]) -> None:
        if self._video_ladder is not None:
            return
        if self._audio is not None and self._audio.info is not None:
            infos = [*infos, self._audio.info]
        self._video_ladder = infos
        self.sink.on_ladder(infos)

    async def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._video is not None and not self._hand_over_asked:
            await _put(self._video.input, None)
        if self._audio is not None:
            self._audio.finish()
        # Joining after the workers posted their last packets: those callbacks run first
        # (the hand-over too: the decode thread posted it before it returned).
        if self._video is not None:
            await asyncio.to_thread(self._video.join)
            if self._hand_over_asked:
                if not self._video_on_loop:  # the loop closed before the hand-over ran
                    self._on_video_handed_over()
                self._video.end_of_stream()
        if self._audio is not None:
            await asyncio.to_thread(self._audio.join)
        await asyncio.sleep(0)
        if self._video_ladder is None:
            audio = [self._audio.info] if self._audio and self._audio.info else []
            self._video_ladder = audio
            self.sink.on_ladder(audio)
        faults = dict(self.stats.faults.counts)
        log.info("%s ended; faults %s", self._prefix, faults or "none")
        self.sink.on_end()
        # The workers are over; dropping them frees their codec contexts now, and with those
        # libavcodec's and x264's own threads and frame pools (PyAV has no explicit close).
        self._video = None
        self._audio = None


async def _put(target: queue.Queue[_T], item: _T) -> None:
    """Put into a worker's bounded queue without blocking the loop (back-pressure instead)."""
    try:
        target.put_nowait(item)
    except queue.Full:
        await asyncio.to_thread(target.put, item)


def _put_nowait(target: queue.Queue[_T], item: _T) -> _T | None:
    """Put an item (not None) into a worker's bounded queue if it has room; else the item
    back, for the caller to wait with."""
    try:
        target.put_nowait(item)
    except queue.Full:
        return item
    return None
