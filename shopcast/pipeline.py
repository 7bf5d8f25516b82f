"""Per-stream media pipeline: hub → transcoder → live package, across publisher reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from ingest.hub import HubReader
from ingest.media import MediaKind
from ingest.sessions import MAIN_INPUT, KeyframeSource, LiveStreams, PublishSession
from packager.live import LivePackage, PackageListener, PackagerConfig, ShowStart
from packager.recorder import Recording
from packager.switch import SwitchCue, SwitchRefused
from packager.tags import Tag
from shopcast.config import ContinuitySection
from shopcast.store import DatabaseUnavailable
from transcode.ladder import LadderTranscoder
from transcode.policy import LadderConfig
from transcode.slate import SlateCache, SlateClip, SlateError

log = logging.getLogger(__name__)
#: Seconds between keyframe requests to a WHIP input while a switch to it waits for its cue.
_KEYFRAME_ASK = 0.25


@dataclass
class StreamPipeline:
    """What runs for one stream id: its package outlives sessions within the reconnect window."""

    package: LivePackage
    transcoder: LadderTranscoder | None = None
    finish_timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    recording: Recording | None = None  # the show's recording, when it is recorded
    #: Set once every rendition's slate is encoded (or could not be).
    slate_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: The session whose media gaps drop it (see ``Pipelines._watch_gap``), while watched.
    gap_session: PublishSession | None = None
    #: The current session's task (transcoder run, after the previous one's end is listed).
    runner: asyncio.Task[None] | None = None
    #: After ENDLIST: when the ended stream's pipeline is let go (see ``Pipelines._release``).
    release_timer: asyncio.TimerHandle | None = None
    #: ``time.monotonic()`` of the last input switch asked for (switches are rate-limited).
    last_switch: float = -math.inf
    switching: bool = False
    #: Warm standbys of held inputs by name (``None`` while one waits for the show's ladder).
    standby: dict[str, _Cued | None] = field(default_factory=dict)
    #: A re-plan put off by the switch interval (a flapping format), when one is.
    replan_timer: asyncio.TimerHandle | None = None
    #: Format changes of the input on air: re-planned, and put off by the switch interval.
    replans: int = 0
    replans_deferred: int = 0
    #: Set once a warm input that covers for a dropped one is on air (or could not be).
    warm_cover: asyncio.Event | None = None


class ShowSource(Protocol):
    """Where a stream's show stands across origins (the cluster: its lease and stored tags)."""

    def show_start(self, stream_id: str) -> ShowStart | None:
        """The show's start and owner from the lease this node holds on ``stream_id`` (taken
        at publish admission); ``None`` when no lease is known."""

    async def show_tags(self, stream_id: str, since: float) -> list[Tag]:
        """The stream's stored tags placed since ``since`` (wall clock), in time order; may
        raise ``DatabaseUnavailable``."""


#: Retries of a continued show's tags while the database is away: first after this many
#: seconds, doubling up to the maximum.
TAGS_RETRY_FIRST, TAGS_RETRY_MAX = 0.5, 5.0
#: Tags placed this long before the show's start (its lease's clock) still belong to it: the
#: nodes' clocks and the database's may be this far apart.
TAGS_CLOCK_SLACK = 2.0


@dataclass
class _Cued:
    """An input cued for a switch: its transcoder runs into ``cue``; ``start`` is the frame."""

    cue: SwitchCue
    transcoder: LadderTranscoder
    task: asyncio.Task[None]
    start: Fraction

    async def cancel(self) -> None:
        """Give the cue up: the input is held again."""
        self.transcoder.reader.close()
        await _done(self.task)


@dataclass(frozen=True)
class SwitchDone:
    """Where a switch happened: the packaged time of the new input's first frame and its
    PROGRAM-DATE-TIME (None when the input was already active)."""

    input: str
    switched: bool
    time: Fraction | None = None
    program_date_time: float | None = None


class SwitchFailed(Exception):
    """A switch refused: HTTP-like ``status``, a ``code``, words, and when to retry (429)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


class RecordingOpener(Protocol):
    def open_recording(self, stream_id: str, target_duration: int) -> Recording | None:
        """A recording for a new show of ``stream_id``, or None when it is not recorded."""


class Pipelines:
    """Starts a transcoder for every publish session and keeps each stream's playlists."""

    def __init__(
        self,
        streams: LiveStreams,
        ladder: LadderConfig,
        packager: PackagerConfig,
        listener: PackageListener | None = None,
        recordings: RecordingOpener | None = None,
        continuity: ContinuitySection | None = None,
        shows: ShowSource | None = None,
    ) -> None:
        self.streams = streams
        #: Where each show stands across origins; ``None``: this origin alone knows its shows.
        self.shows = shows
        self.continuity = continuity or ContinuitySection()
        #: Told ``(stream_id, reason)`` when a show goes on slate.
        self.on_interrupted: list[Callable[[str, str], None]] = []
        #: Told ``(stream_id, seconds on slate)`` when the publisher is back after a slate.
        self.on_resumed: list[Callable[[str, float], None]] = []
        #: Told ``stream_id`` when an ended show is let go (``_release``).
        self.on_released: list[Callable[[str], None]] = []
        self.recordings = recordings
        self.ladder = ladder
        #: Slates by what their bits depend on: alike shows share one encode.
        self.slates = SlateCache(ladder)
        self.packager = packager
        self.listener = listener  # told of every stream's packaging events (metrics)
        self.pipelines: dict[str, StreamPipeline] = {}
        #: Pipelines whose session's media gaps are watched, and the one timer that checks.
        self._gap_watched: dict[str, StreamPipeline] = {}
        self._gap_timer: asyncio.TimerHandle | None = None
        streams.on_session_start.append(self._session_started)
        streams.on_session_end.append(self._session_ended)
        streams.on_input_start.append(self._input_started)
        streams.on_input_end.append(self._input_ended)
        streams.on_reconfigured.append(self._input_reconfigured)

    def package(self, stream_id: str) -> LivePackage | None:
        """The stream's live (or just ended) package, for the origin."""
        pipeline = self.pipelines.get(stream_id)
        return pipeline.package if pipeline else None

    def _session_started(self, session: PublishSession) -> None:
        old = self.pipelines.get(session.stream_id)
        held = old is not None and not old.package.ended and old.package.input != session.input
        if held and old is not None and old.finish_timer is None:
            # Another input feeds the show: this one is held, ready for a switch.
            log.info("[%s] input %s back: held", session.stream_id, session.input)
            on_air = self.streams.input_session(session.stream_id, old.package.input)
            back = self.continuity.backup_return == "main" and not old.switching
            if back and on_air is not None and on_air.backup:
                # Main is back while the backup covers for it: main again, at its first IDR.
                self._spawn(old, self._back_to_main(old, session))
            self._keep_warm(old)
            return
        # Attach now, so no unit is missed while an old transcoder finishes flushing.
        reader = session.hub.add_reader("transcode")
        reconnect = old is not None and old.finish_timer is not None and not old.package.ended
        if old is not None and old.release_timer is not None:
            old.release_timer.cancel()  # replaced below by the new show's pipeline
            old.release_timer = None
        if old is not None and reconnect:
            assert old.finish_timer is not None
            old.finish_timer.cancel()
            old.finish_timer = None
            pipeline = old
        else:
            start = self.shows.show_start(session.stream_id) if self.shows is not None else None
            package = LivePackage(
                session.stream_id, self.packager, listener=self.listener, start=start
            )
            pipeline = StreamPipeline(package)
            if start is not None and start.continued:
                # The show was live on another origin moments ago (it died, or lost the
                # stream): the same playlists go on here, with the show's tags.
                log.info(
                    "[%s] show continues from another origin (owner %d)",
                    session.stream_id,
                    start.owner_epoch,
                )
                self._spawn(pipeline, self._restore_tags(package, start))
            if self.recordings is not None:
                # A new show here: a new recording (a reconnect continues the one it had). A
                # show continued from another origin is recorded as a new part too: the
                # previous part is in that origin's recordings store (perhaps its own disk,
                # perhaps gone with it) and is closed by its crash recovery; writing into it
                # from here would race that recovery on the same manifest. Each part is a
                # complete recording of its stretch of the show; nothing is lost or mixed.
                pipeline.recording = self.recordings.open_recording(
                    session.stream_id, self.packager.target_duration
                )
                package.sink = pipeline.recording
            self.pipelines[session.stream_id] = pipeline
            self._spawn(pipeline, self._prepare_slate(pipeline))
        previous = old.runner if old is not None else None
        transcoder = LadderTranscoder(reader, self.ladder, sink=pipeline.package)
        pipeline.transcoder = transcoder

        async def run() -> None:
            if previous is not None:
                await _done(previous)  # its last parts land before the discontinuity
            if reconnect:
                package = pipeline.package
                if package.active_input == "slate":
                    # The show resumes from the new source's first IDR.
                    stretch = package.stop_slate()
                    for listener in self.on_resumed:
                        listener(session.stream_id, round(stretch, 3))
                log.info("[%s] publisher back: playlists continue", session.stream_id)
                package.continue_after_reconnect()
                package.input = session.input
            await transcoder.run()

        pipeline.runner = self._spawn(pipeline, run(), name=f"pipeline-{session.stream_id}")
        self._watch_gap(pipeline, session)
        self._keep_warm(pipeline)

    def _spawn(
        self, pipeline: StreamPipeline, coro: Coroutine[Any, Any, None], name: str | None = None
    ) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        pipeline.tasks.add(task)
        task.add_done_callback(lambda t: _task_done(pipeline, t))
        return task

    async def _restore_tags(self, package: LivePackage, start: ShowStart) -> None:
        """List the continued show's earlier tags (every acknowledged tag is stored); the
        show goes on meanwhile, and while the database is away this retries."""
        assert self.shows is not None
        delay = TAGS_RETRY_FIRST
        while not package.ended:
            try:
                tags = await self.shows.show_tags(
                    package.stream_id, start.started_at - TAGS_CLOCK_SLACK
                )
            except DatabaseUnavailable as exc:
                log.warning(
                    "[%s] the show's tags not loaded yet (retry in %.1f s): %s",
                    package.stream_id,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, TAGS_RETRY_MAX)
                continue
            listed = package.restore_tags(tags)
            log.info(
                "[%s] %d of the show's %d tags listed again", package.stream_id, listed, len(tags)
            )
            return

    # -- continuity ------------------------------------------------------------------------
    async def _prepare_slate(self, pipeline: StreamPipeline) -> None:
        """Encode every rendition's slate once, off the loop, as soon as the ladder is known."""
        package = pipeline.package
        try:
            await package.ladder_ready.wait()
            image = self.continuity.image_for(package.stream_id)
            renditions = [(r.name, r.info, r.audio) for r in package.renditions.values()]

            def encode() -> dict[str, SlateClip]:
                clips = {}
                for name, info, audio in renditions:
                    video = info if info.kind is MediaKind.VIDEO else None
                    lead_audio = audio if video is not None else info
                    clips[name] = self.slates.get(image, video, lead_audio)
                return clips

            started = time.perf_counter()
            try:
                clips = await asyncio.to_thread(encode)
            except SlateError as exc:
                log.warning("[%s] no slate: %s", package.stream_id, exc)
                return
            package.set_slate(clips)
            log.info(
                "[%s] slate encoded for %d renditions in %.2f s",
                package.stream_id,
                len(clips),
                time.perf_counter() - started,
            )
        finally:
            pipeline.slate_ready.set()

    def _watch_gap(self, pipeline: StreamPipeline, session: PublishSession) -> None:
        """A connected publisher that sends no media for ``gap_timeout`` has dropped.

        One timer checks every watched session's last media time each ``gap_timeout / 4``
        (a timer per stream, re-armed that often, was 2 % of the loop at 300 publishers).
        """
        pipeline.gap_session = session
        self._gap_watched[session.stream_id] = pipeline
        if self._gap_timer is None:
            self._arm_gap_check(deferred=False)

    def _arm_gap_check(self, deferred: bool) -> None:
        loop = asyncio.get_running_loop()
        every = self.continuity.gap_timeout / 4
        self._gap_timer = loop.call_later(every, self._check_gaps, loop.time() + every, deferred)

    def _check_gaps(self, due: float, deferred: bool) -> None:
        self._gap_timer = None
        gap = self.continuity.gap_timeout
        if asyncio.get_running_loop().time() - due > gap / 4 and not deferred:
            # The loop itself was held up (start-up work on its core, a long callback):
            # timers run before sockets are read, so the media may be waiting unread.
            # Look again once the loop has read them (one deferral, then as usual).
            self._arm_gap_check(deferred=True)
            return
        now = time.time()
        for stream_id, pipeline in list(self._gap_watched.items()):
            session = pipeline.gap_session
            if session is not None and not session.ended:
                last = session.last_media
                if last is None or now - last < gap:
                    continue
            if self._gap_watched.get(stream_id) is pipeline:  # not re-watched meanwhile
                del self._gap_watched[stream_id]
            if session is None or session.ended:
                continue
            pipeline.gap_session = None
            reason = f"no media for {gap:g} s"
            log.warning("[%s] %s: publisher dropped", session.stream_id, reason)
            self.streams.end(session, reason)
            session.publisher.kick(reason)
        if self._gap_watched:
            self._arm_gap_check(deferred=False)

    def _input_started(self, session: PublishSession) -> None:
        """A named input publishes: held, unless it fed the show and dropped (it resumes)."""
        pipeline = self.pipelines.get(session.stream_id)
        if (
            pipeline is not None
            and pipeline.finish_timer is not None
            and pipeline.package.input == session.input
        ):
            self._session_started(session)
        elif pipeline is not None:
            self._keep_warm(pipeline)

    def _input_ended(self, session: PublishSession) -> None:
        """A named input stopped: when it fed the show, as if the main publisher had."""
        self._session_ended(session)

    def _session_ended(self, session: PublishSession) -> None:
        pipeline = self.pipelines.get(session.stream_id)
        if pipeline is None or pipeline.package.ended:
            return
        if pipeline.package.input != session.input or pipeline.switching:
            return  # a held input stopped (or another takes over now): the show goes on
        pipeline.gap_session = None
        # A camera that stops while main publishes, or an input dropping while a backup
        # publishes: the other input takes over at its next keyframe (the slate covers meanwhile).
        cover = None
        if session.input != MAIN_INPUT:
            cover = self.streams.input_session(session.stream_id, MAIN_INPUT)
        if cover is None and not session.clean_end:
            cover = self._backup_for(session)
        if cover is not None and pipeline.standby.get(cover.input) is not None:
            # Warm: it goes on air at its next frame, before a slate would be listed.
            pipeline.warm_cover = asyncio.Event()
        self._interrupted(pipeline, session.stream_id, session.clean_end and cover is None)
        if cover is not None:
            log.info("[%s] input %s stopped: %s takes over", *_names(session, cover))
            self._spawn(pipeline, self._cover(pipeline, session, cover))

    def _backup_for(self, stopped: PublishSession) -> PublishSession | None:
        """A publishing backup input of the stream, other than ``stopped``."""
        named = self.streams.inputs.get(stopped.stream_id, {})
        return next((s for name, s in sorted(named.items()) if s.backup and s is not stopped), None)

    async def _back_to_main(self, pipeline: StreamPipeline, main: PublishSession) -> None:
        """Main is back while a backup covers: main again at its next keyframe, once the
        switch interval since the last switch has passed (a flapping main cannot thrash)."""
        pipeline.switching = True
        try:
            wait = pipeline.last_switch + self.continuity.switch_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            package = pipeline.package
            if package.ended or pipeline.finish_timer is not None:
                return
            on_air = self.streams.input_session(main.stream_id, package.input)
            if on_air is not None and not on_air.backup:
                return  # someone switched meanwhile
            if main.ended:
                if on_air is None:  # the backup stopped too while we waited (its end waited)
                    self._interrupted(pipeline, main.stream_id, clean=False)
                return
            await self._switch(pipeline, main)
        except SwitchFailed as exc:
            log.warning("[%s] main not back on air: %s", main.stream_id, exc.message)
            feeding = self.streams.input_session(main.stream_id, pipeline.package.input)
            if feeding is None and pipeline.finish_timer is None and not pipeline.package.ended:
                self._interrupted(pipeline, main.stream_id, clean=False)
        finally:
            pipeline.switching = False
            pipeline.last_switch = time.monotonic()

    def _interrupted(self, pipeline: StreamPipeline, stream_id: str, clean: bool) -> None:
        """No input feeds the show: the slate after a drop, then ENDLIST unless one returns."""
        loop = asyncio.get_running_loop()
        if clean:
            # S 6.2.1-style grace: wait for the publisher before writing ENDLIST.
            window = self.packager.reconnect_window
        else:
            window = self.continuity.slate_window
            error = self.streams.states[stream_id].last_error or "connection lost"
            self._spawn(pipeline, self._play_slate(pipeline, error))
        pipeline.finish_timer = loop.call_later(window, self._finish, stream_id)

    async def _play_slate(self, pipeline: StreamPipeline, reason: str) -> None:
        """The publisher dropped: once its last media is listed, the slate plays until the
        publisher is back or the slate window ends."""
        package = pipeline.package
        dropped = pipeline.runner
        warm_cover = pipeline.warm_cover
        if dropped is not None:
            await _done(dropped)  # its last parts are listed before the discontinuity
        if package.renditions:
            await pipeline.slate_ready.wait()
        if warm_cover is not None:
            # A warm input covers from its next frame: no slate in between unless it fails
            # (waited half a part target, so a slate still comes within one).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(warm_cover.wait(), float(self.packager.part_target) / 2)
        if pipeline.runner is not dropped or pipeline.finish_timer is None:
            return  # back already (or ended)
        if not package.start_slate():
            # No slate to play (its encode failed): the short wait of a clean end instead.
            log.warning("[%s] publisher dropped (%s), no slate", package.stream_id, reason)
            if pipeline.finish_timer is not None:
                pipeline.finish_timer.cancel()
                pipeline.finish_timer = asyncio.get_running_loop().call_later(
                    self.packager.reconnect_window, self._finish, package.stream_id
                )
            return
        log.info("[%s] publisher dropped (%s): on slate", package.stream_id, reason)
        for listener in self.on_interrupted:
            listener(package.stream_id, reason)
        # A few wake-ups per part: each lists what is due; nothing is encoded here.
        interval = float(self.packager.part_target) / 4
        while package.active_input == "slate":
            await asyncio.sleep(interval)
            package.advance_slate()

    # -- switching inputs (multi-camera) -------------------------------------------------
    async def switch(self, stream_id: str, name: str) -> SwitchDone:
        """Switch every rendition to input ``name`` at its next keyframe (an IDR on every
        rendition at the same frame, the PDT grid unbroken). ``SwitchFailed`` says why not."""
        pipeline = self.pipelines.get(stream_id)
        if pipeline is None or pipeline.package.ended or not pipeline.package.renditions:
            raise SwitchFailed(409, "offline", f"stream {stream_id!r} has no show on")
        package = pipeline.package
        if package.active_input == "slate" or pipeline.finish_timer is not None:
            raise SwitchFailed(409, "interrupted", "the show's input dropped: no switch now")
        if name == package.input:
            return SwitchDone(name, switched=False)
        session = self.streams.input_session(stream_id, name)
        if session is None:
            raise SwitchFailed(409, "not_publishing", f"input {name!r} is not publishing")
        wait = pipeline.last_switch + self.continuity.switch_interval - time.monotonic()
        if pipeline.switching or wait > 0:
            raise SwitchFailed(
                429,
                "rate_limited",
                f"at most one switch every {self.continuity.switch_interval:g} s",
                retry_after=max(1, math.ceil(wait)),
            )
        pipeline.switching = True
        pipeline.last_switch = time.monotonic()
        try:
            return await self._switch(pipeline, session)
        except SwitchFailed:
            # The input on air may have stopped meanwhile (its end waited for this switch).
            feeding = self.streams.input_session(stream_id, package.input)
            if feeding is None and not package.ended and pipeline.finish_timer is None:
                self._interrupted(pipeline, stream_id, clean=False)
            raise
        finally:
            pipeline.switching = False

    async def _switch(self, pipeline: StreamPipeline, session: PublishSession) -> SwitchDone:
        package = pipeline.package
        cued = await self._cue(pipeline, session)
        # The old input's last frames are listed, then the new one follows on every rendition.
        if pipeline.transcoder is not None:
            pipeline.transcoder.reader.close()
        if pipeline.runner is not None:
            await _done(pipeline.runner)
        if package.ended or package.active_input == "slate" or pipeline.finish_timer is not None:
            await cued.cancel()
            raise SwitchFailed(409, "interrupted", "the show's input dropped during the switch")
        return self._go_live(pipeline, session, cued)

    async def _cue(
        self, pipeline: StreamPipeline, session: PublishSession, reader: HubReader | None = None
    ) -> _Cued:
        """Run ``session``'s transcoder into a cue until an IDR at the same frame is out of
        every rendition (``SwitchFailed`` when it does not fit or does not come). A warm
        standby of the input goes on air instead: its cue is the next decoded frame."""
        warm = pipeline.standby.get(session.input) if reader is None else None
        if warm is not None and (warm.cue.ready.done() or warm.task.done()):
            warm = None  # refused, or its input stopped: a cold cue says why
        if warm is not None:
            del pipeline.standby[session.input]
            warm.transcoder.go_on_air()
            cue, transcoder, task = warm.cue, warm.transcoder, warm.task
        else:
            # A late reader starts at the input's next keyframe (see StreamHub.add_reader).
            reader = reader or session.hub.add_reader(f"transcode-{session.input}")
            cue = SwitchCue(pipeline.package, session.input)
            transcoder = self._input_transcoder(pipeline, session, reader, cue)
            task = self._spawn(pipeline, transcoder.run(), name=f"pipeline-{session.stream_id}")
        publisher = session.publisher
        if isinstance(publisher, KeyframeSource) and warm is None:
            # WHIP: keyframes on demand (the reader's first, the one that shows the GOP, the
            # cue's) instead of waiting for the browser's own, up to the cue.
            source = publisher

            async def ask_keyframes() -> None:
                while not cue.ready.done():
                    source.request_keyframe(force=True)
                    await asyncio.sleep(_KEYFRAME_ASK)

            self._spawn(pipeline, ask_keyframes())
        cued = _Cued(cue, transcoder, task, Fraction(0))
        try:
            cued.start = await asyncio.wait_for(
                asyncio.shield(cue.ready), self.continuity.switch_timeout
            )
        except SwitchRefused as exc:
            await cued.cancel()
            raise SwitchFailed(409, "incompatible_input", str(exc)) from None
        except TimeoutError:
            await cued.cancel()
            raise SwitchFailed(
                409,
                "no_keyframe",
                f"input {session.input} gave no usable keyframe within "
                f"{self.continuity.switch_timeout:g} s",
            ) from None
        return cued

    def _input_transcoder(
        self,
        pipeline: StreamPipeline,
        session: PublishSession,
        reader: HubReader,
        cue: SwitchCue,
        standby: bool = False,
    ) -> LadderTranscoder:
        """A transcoder of ``session`` onto the show's renditions, into ``cue``."""
        package = pipeline.package
        videos = [
            (name, r.info.width, r.info.height)
            for name, r in package.renditions.items()
            if r.info.kind is MediaKind.VIDEO
        ]
        # A held input's GOP is known from its ingest: the ladder is then known at its first
        # keyframe, and the switch happens there (not one GOP later).
        gop = session.stats.gop
        return LadderTranscoder(
            reader,
            self.ladder,
            sink=cue,
            name=f"{session.stream_id}/{session.input}",
            gop_known=gop is not None and gop <= self.ladder.segment_duration + 0.05,
            # Its audio is encoded into the show's format when it differs (mono/stereo, rate),
            # its video onto the show's renditions whatever its size.
            audio_like=package.audio,
            video_like=videos,
            standby=standby,
            audio_only=not videos,  # an audio-only show switches at the next audio frame
        )

    # -- warm standby ----------------------------------------------------------------------
    def warm(self, stream_id: str, input_name: str) -> bool:
        """Whether ``input_name`` is held warm: decoded, its ladder planned, ready to go on air
        at its next frame."""
        pipeline = self.pipelines.get(stream_id)
        standby = pipeline.standby.get(input_name) if pipeline is not None else None
        return standby is not None and bool(standby.transcoder.renditions)

    def _keep_warm(self, pipeline: StreamPipeline) -> None:
        """Every held input that ``[continuity] warm_standby`` names gets a warm standby."""
        mode = self.continuity.warm_standby
        package = pipeline.package
        if mode == "off" or package.ended:
            return
        stream_id = package.stream_id
        held = list(self.streams.inputs.get(stream_id, {}).values())
        main = self.streams.input_session(stream_id, MAIN_INPUT)
        if main is not None:
            held.append(main)
        for session in held:
            if (
                session.ended
                or session.input == package.input
                or session.input in pipeline.standby
                or (mode == "backup" and not session.backup)
            ):
                continue
            pipeline.standby[session.input] = None
            self._spawn(pipeline, self._warm(pipeline, session))

    async def _warm(self, pipeline: StreamPipeline, session: PublishSession) -> None:
        """Decode ``session`` continuously, off the loop, encoding nothing (one decoded frame
        kept), until it goes on air (``_cue``) or stops publishing."""
        package = pipeline.package
        warm: _Cued | None = None
        try:
            await package.ladder_ready.wait()
            video = any(r.info.kind is MediaKind.VIDEO for r in package.renditions.values())
            # An audio-only show switches at the next audio frame anyway: nothing to warm.
            if not video or session.ended or package.ended or package.input == session.input:
                return
            reader = session.hub.add_reader(f"standby-{session.input}")
            cue = SwitchCue(package, session.input)
            transcoder = self._input_transcoder(pipeline, session, reader, cue, standby=True)
            task = self._spawn(pipeline, transcoder.run(), name=f"standby-{session.stream_id}")
            warm = _Cued(cue, transcoder, task, Fraction(0))
            pipeline.standby[session.input] = warm
            log.info("[%s] input %s: warm standby", session.stream_id, session.input)
            publisher = session.publisher
            if isinstance(publisher, KeyframeSource):
                # WHIP: the reader starts at a keyframe; a browser sends one when asked.
                for _ in range(math.ceil(self.continuity.switch_timeout / _KEYFRAME_ASK)):
                    if transcoder.renditions or task.done():
                        break
                    publisher.request_keyframe(force=True)
                    await asyncio.wait({task}, timeout=_KEYFRAME_ASK)
            await _done(task)
        finally:
            if pipeline.standby.get(session.input, warm) is warm:
                pipeline.standby.pop(session.input, None)
            if warm is not None and warm.cue.ready.done() and not warm.cue.ready.cancelled():
                warm.cue.ready.exception()  # a refusal nobody waited for is no error

    def _input_reconfigured(self, session: PublishSession, change: str) -> None:
        """The input on air changed its video format mid-show (another picture size or codec):
        re-planned as a switch to itself. Its transcoder ends with the old format's last frame;
        a new one plans the ladder for the new format (the vertical policy onto the same
        rungs; a passthrough rung that no longer fits is encoded) and takes over from the new
        format's first IDR, after a discontinuity, with a new init where the bitstream differs."""
        pipeline = self.pipelines.get(session.stream_id)
        if (
            pipeline is None
            or pipeline.package.ended
            or pipeline.package.input != session.input
            or pipeline.package.active_input == "slate"
            or pipeline.finish_timer is not None
            or pipeline.transcoder is None
            or pipeline.transcoder.reader.hub is not session.hub
        ):
            return  # not on air: a switch to it plans its ladder from its format then
        wait = pipeline.last_switch + self.continuity.switch_interval - time.monotonic()
        if pipeline.switching or wait > 0 or pipeline.replan_timer is not None:
            # A flapping format cannot thrash the ladder: re-plans are rate-limited like
            # switches. Meanwhile the transcoder on air follows the new format itself (its
            # encoded rungs scale any picture; a passthrough rung that no longer fits stops
            # and its rendition waits), and whatever format is current then is re-planned.
            pipeline.replans_deferred += 1
            pipeline.transcoder.stats.faults.record(
                "replan_deferred",
                f"{change}: re-planned in {max(wait, 0):.1f} s (or after a switch)",
            )
            if pipeline.replan_timer is None:
                pipeline.replan_timer = asyncio.get_running_loop().call_later(
                    max(wait, 0), self._deferred_replan, pipeline, session, change
                )
            return
        log.warning("[%s] input %s: %s: re-planning", session.stream_id, session.input, change)
        pipeline.switching = True
        # Attached now, before the new format's first IDR arrives: the new ladder starts there.
        reader = session.hub.add_reader(f"transcode-{session.input}")
        pipeline.transcoder.reader.close()  # it drains up to the new configuration, then ends
        self._spawn(pipeline, self._replan(pipeline, session, reader, change))

    def _deferred_replan(
        self, pipeline: StreamPipeline, session: PublishSession, change: str
    ) -> None:
        """The switch interval is over: re-plan the input on air at its next keyframe (its
        current transcoder ends just before it, the new one starts there)."""
        pipeline.replan_timer = None
        transcoder = pipeline.transcoder
        package = pipeline.package
        if (
            package.ended
            or package.input != session.input
            or session.ended
            or package.active_input == "slate"
            or pipeline.finish_timer is not None
            or transcoder is None
            or transcoder.reader.hub is not session.hub
        ):
            return  # off air since: a switch back to it plans its ladder afresh
        if pipeline.switching:  # a switch or re-plan under way: after it
            pipeline.replan_timer = asyncio.get_running_loop().call_later(
                self.continuity.switch_interval, self._deferred_replan, pipeline, session, change
            )
            return
        log.warning(
            "[%s] input %s: %s: re-planning (deferred)", session.stream_id, session.input, change
        )
        pipeline.switching = True
        reader = session.hub.add_reader(f"transcode-{session.input}")
        transcoder.reader.end_at_keyframe()
        self._spawn(pipeline, self._replan(pipeline, session, reader, change))

    async def _replan(
        self, pipeline: StreamPipeline, session: PublishSession, reader: HubReader, change: str
    ) -> None:
        package = pipeline.package
        old = pipeline.transcoder
        try:
            try:
                cued = await self._cue(pipeline, session, reader)
            except SwitchFailed as exc:
                # The new format cannot feed the show's renditions: a drop, with the reason.
                log.warning("[%s] %s cannot be re-planned: %s", session.stream_id, change, exc)
                if pipeline.transcoder is not None:
                    pipeline.transcoder.stats.faults.record("replan_failed", f"{change}: {exc}")
                if not package.ended and pipeline.finish_timer is None:
                    self._interrupted(pipeline, session.stream_id, clean=False)
                return
            if pipeline.runner is not None:
                await _done(pipeline.runner)  # the old format's last parts are listed first
            if package.ended or package.active_input == "slate" or pipeline.finish_timer:
                await cued.cancel()
                return
            done = self._go_live(pipeline, session, cued)
            assert pipeline.transcoder is not None and done.time is not None
            pipeline.replans += 1
            pipeline.transcoder.stats.faults.record(
                "input_reconfigured", f"{change}: ladder re-planned at {float(done.time):.3f} s"
            )
        finally:
            if old is not None:
                old.reader.close()  # (one told to end at a keyframe is still attached)
            pipeline.switching = False
            pipeline.last_switch = time.monotonic()  # re-plans count as switches

    def _go_live(
        self, pipeline: StreamPipeline, session: PublishSession, cued: _Cued
    ) -> SwitchDone:
        """The cued input feeds every rendition from its cue frame on."""
        package = pipeline.package
        switched = cued.cue.take_over(cued.start)
        pipeline.transcoder, pipeline.runner = cued.transcoder, cued.task
        self._watch_gap(pipeline, session)  # a media gap of the new input is a drop too
        self._keep_warm(pipeline)  # the input that went off air, when it is to be warm
        pdt = package.program_date_time(switched)
        log.info(
            "[%s] switched to input %s at %.3f s (PDT %.3f)",
            session.stream_id,
            session.input,
            float(switched),
            pdt,
        )
        return SwitchDone(session.input, True, switched, pdt)

    async def _cover(
        self, pipeline: StreamPipeline, dropped: PublishSession, to: PublishSession
    ) -> None:
        """The input on air dropped while ``to`` publishes: the slate covers (within a part
        target, as after any drop) until ``to`` is cued, then ``to`` takes over from the slate
        at its keyframe; when it cannot, the slate plays on as after any drop."""
        package = pipeline.package
        dropped_runner = pipeline.runner
        pipeline.switching = True
        try:
            try:
                cued = await self._cue(pipeline, to)
            except SwitchFailed as exc:
                log.warning("[%s] %s cannot cover: %s", to.stream_id, to.input, exc.message)
                return
            if dropped_runner is not None:
                await _done(dropped_runner)  # the dropped input's last media is listed
            if (
                package.ended
                or pipeline.finish_timer is None
                or pipeline.runner is not dropped_runner
            ):
                await cued.cancel()  # ended, or an input came back meanwhile
                return
            stretch = package.stop_slate()
            pipeline.finish_timer.cancel()
            pipeline.finish_timer = None
            if stretch:
                for listener in self.on_resumed:
                    listener(to.stream_id, round(stretch, 3))
            self._go_live(pipeline, to, cued)
        finally:
            pipeline.switching = False
            pipeline.last_switch = time.monotonic()
            if pipeline.warm_cover is not None:
                pipeline.warm_cover.set()
                pipeline.warm_cover = None

    def _finish(self, stream_id: str) -> asyncio.Task[None] | None:
        pipeline = self.pipelines.get(stream_id)
        if pipeline is None:
            return None
        if pipeline.finish_timer is not None:
            pipeline.finish_timer.cancel()
        pipeline.finish_timer = None

        async def finish() -> None:
            if pipeline.runner is not None:
                await _done(pipeline.runner)
            if pipeline.package.ended:
                return
            pipeline.package.finish()
            log.info("[%s] stream ended: ENDLIST written", stream_id)
            for warm in pipeline.standby.values():
                if warm is not None:  # nothing left to cover for: stop decoding
                    warm.transcoder.reader.close()
            # S 6.2.2: a segment leaving the playlist stays available for its own duration
            # plus the playlist's; releasing the ended show removes them all, so it waits that.
            cfg = self.packager
            linger = float(cfg.segment_duration * (cfg.window_segments + 1))
            pipeline.release_timer = asyncio.get_running_loop().call_later(
                linger, self._release, pipeline
            )
            if pipeline.recording is not None:
                await pipeline.recording.close()

        return self._spawn(pipeline, finish())

    def _release(self, pipeline: StreamPipeline) -> None:
        """Let an ended show go: its parts, slate clips, transcoder stats and metrics series
        (the replay lives on in its recording). A new show of the stream starts afresh."""
        pipeline.release_timer = None
        stream_id = pipeline.package.stream_id
        if self.pipelines.get(stream_id) is pipeline:
            del self.pipelines[stream_id]
            log.debug("[%s] ended show released", stream_id)
            for listener in self.on_released:
                listener(stream_id)
        pipeline.transcoder = None
        pipeline.runner = None

    async def end_show(self, stream_id: str, reason: str) -> bool:
        """End the show now: the publisher is kicked, ENDLIST, the recording closed.
        False when there is no show to end."""
        kicked = self.streams.kick(stream_id, reason)
        pipeline = self.pipelines.get(stream_id)
        if pipeline is None or pipeline.package.ended:
            return kicked
        task = self._finish(stream_id)
        if task is not None:
            await asyncio.shield(task)
        return True

    async def close(self) -> None:
        """Stop every transcoder (flushing it) and end every playlist."""
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        self._gap_watched.clear()
        for stream_id, pipeline in self.pipelines.items():
            if pipeline.release_timer is not None:
                pipeline.release_timer.cancel()
            if pipeline.finish_timer is not None:
                pipeline.finish_timer.cancel()
            pipeline.gap_session = None
            if pipeline.replan_timer is not None:
                pipeline.replan_timer.cancel()
            if pipeline.transcoder is not None:
                await pipeline.transcoder.close()
            if not pipeline.package.ended:
                pipeline.package.finish()
            if pipeline.recording is not None:
                await pipeline.recording.close()
            log.debug("[%s] pipeline closed", stream_id)
        for pipeline in self.pipelines.values():
            for task in list(pipeline.tasks):
                task.cancel()


def _names(stopped: PublishSession, backup: PublishSession) -> tuple[str, str, str]:
    return stopped.stream_id, stopped.input, backup.input


async def _done(task: asyncio.Task[None]) -> None:
    """Until ``task`` is over (however it ends), without cancelling it when we are cancelled."""
    await asyncio.wait({task})


def _task_done(pipeline: StreamPipeline, task: asyncio.Task[None]) -> None:
    pipeline.tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "[%s] pipeline task failed",
            pipeline.package.stream_id,
            exc_info=task.exception(),
        )


def packager_config(part_target: float, ladder: LadderConfig, **kw: object) -> PackagerConfig:
    """The packager settings that must agree with the ladder (segment = GOP)."""
    return PackagerConfig(
        # Rounded up to the millisecond (see PackagerConfig.part_target).
        part_target=Fraction(math.ceil(round(part_target * 1000, 6)), 1000),
        segment_duration=Fraction(ladder.segment_duration).limit_denominator(1000),
        **kw,  # type: ignore[arg-type]
    )
