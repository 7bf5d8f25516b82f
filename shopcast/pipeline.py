"""Per-stream media pipeline: hub → transcoder → live package, across publisher reconnects."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from ingest.media import MediaKind
from ingest.sessions import LiveStreams, PublishSession
from packager.live import LivePackage, PackageListener, PackagerConfig, ShowStart
from packager.recorder import Recording
from packager.tags import Tag
from shopcast.config import ContinuitySection
from shopcast.store import DatabaseUnavailable
from transcode.ladder import LadderTranscoder
from transcode.policy import LadderConfig
from transcode.slate import SlateClip, SlateError, encode_slate, load_slate_image

log = logging.getLogger(__name__)


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
    gap_timer: asyncio.TimerHandle | None = None
    #: The current session's task (transcoder run, after the previous one's end is listed).
    runner: asyncio.Task[None] | None = None
    #: After ENDLIST: when the ended stream's pipeline is let go (see ``Pipelines._release``).
    release_timer: asyncio.TimerHandle | None = None


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
        self.packager = packager
        self.listener = listener  # told of every stream's packaging events (metrics)
        self.pipelines: dict[str, StreamPipeline] = {}
        streams.on_session_start.append(self._session_started)
        streams.on_session_end.append(self._session_ended)

    def package(self, stream_id: str) -> LivePackage | None:
        """The stream's live (or just ended) package, for the origin."""
        pipeline = self.pipelines.get(stream_id)
        return pipeline.package if pipeline else None

    def _session_started(self, session: PublishSession) -> None:
        # Attach now, so no unit is missed while an old transcoder finishes flushing.
        reader = session.hub.add_reader("transcode")
        old = self.pipelines.get(session.stream_id)
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
            await transcoder.run()

        pipeline.runner = self._spawn(pipeline, run(), name=f"pipeline-{session.stream_id}")
        self._watch_gap(pipeline, session)

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
                picture = load_slate_image(image) if image else None
                clips = {}
                for name, info, audio in renditions:
                    video = info if info.kind is MediaKind.VIDEO else None
                    lead_audio = audio if video is not None else info
                    clips[name] = encode_slate(picture, video, lead_audio, self.ladder)
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
        """A connected publisher that sends no media for ``gap_timeout`` has dropped."""
        gap = self.continuity.gap_timeout
        loop = asyncio.get_running_loop()

        def check() -> None:
            pipeline.gap_timer = None
            if session.ended:
                return
            last = session.last_media
            if last is not None and time.time() - last >= gap:
                reason = f"no media for {gap:g} s"
                log.warning("[%s] %s: publisher dropped", session.stream_id, reason)
                self.streams.end(session, reason)
                session.publisher.kick(reason)
                return
            pipeline.gap_timer = loop.call_later(gap / 4, check)

        pipeline.gap_timer = loop.call_later(gap / 4, check)

    def _session_ended(self, session: PublishSession) -> None:
        pipeline = self.pipelines.get(session.stream_id)
        if pipeline is None or pipeline.package.ended:
            return
        if pipeline.gap_timer is not None:
            pipeline.gap_timer.cancel()
            pipeline.gap_timer = None
        loop = asyncio.get_running_loop()
        if session.clean_end:
            # S 6.2.1-style grace: wait for the publisher before writing ENDLIST.
            window = self.packager.reconnect_window
        else:
            window = self.continuity.slate_window
            error = self.streams.states[session.stream_id].last_error or "connection lost"
            self._spawn(pipeline, self._play_slate(pipeline, error))
        pipeline.finish_timer = loop.call_later(window, self._finish, session.stream_id)

    async def _play_slate(self, pipeline: StreamPipeline, reason: str) -> None:
        """The publisher dropped: once its last media is listed, the slate plays until the
        publisher is back or the slate window ends."""
        package = pipeline.package
        dropped = pipeline.runner
        if dropped is not None:
            await _done(dropped)  # its last parts are listed before the discontinuity
        if package.renditions:
            await pipeline.slate_ready.wait()
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
        for stream_id, pipeline in self.pipelines.items():
            if pipeline.release_timer is not None:
                pipeline.release_timer.cancel()
            if pipeline.finish_timer is not None:
                pipeline.finish_timer.cancel()
            if pipeline.gap_timer is not None:
                pipeline.gap_timer.cancel()
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
