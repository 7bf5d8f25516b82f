"""Per-stream media pipeline: hub → transcoder → live package, across publisher reconnects."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from ingest.sessions import LiveStreams, PublishSession
from packager.live import LivePackage, PackageListener, PackagerConfig
from packager.recorder import Recording
from transcode.ladder import LadderTranscoder
from transcode.policy import LadderConfig

log = logging.getLogger(__name__)


@dataclass
class StreamPipeline:
    """What runs for one stream id: its package outlives sessions within the reconnect window."""

    package: LivePackage
    transcoder: LadderTranscoder | None = None
    finish_timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    recording: Recording | None = None  # the show's recording, when it is recorded


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
    ) -> None:
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
        if old is not None and reconnect:
            assert old.finish_timer is not None
            old.finish_timer.cancel()
            old.finish_timer = None
            pipeline = old
        else:
            package = LivePackage(session.stream_id, self.packager, listener=self.listener)
            pipeline = StreamPipeline(package)
            if self.recordings is not None:
                # A new show: a new recording (a reconnect continues the one it had).
                pipeline.recording = self.recordings.open_recording(
                    session.stream_id, self.packager.target_duration
                )
                package.sink = pipeline.recording
            self.pipelines[session.stream_id] = pipeline
        previous = old.transcoder if old is not None else None
        transcoder = LadderTranscoder(reader, self.ladder, sink=pipeline.package)
        pipeline.transcoder = transcoder

        async def run() -> None:
            if previous is not None:
                await previous.wait()  # its last parts land before the discontinuity
            if reconnect:
                log.info("[%s] publisher back: playlists continue", session.stream_id)
                pipeline.package.continue_after_reconnect()
            await transcoder.run()

        task = asyncio.get_running_loop().create_task(run(), name=f"pipeline-{session.stream_id}")
        pipeline.tasks.add(task)
        task.add_done_callback(lambda t: _task_done(pipeline, t))

    def _session_ended(self, session: PublishSession) -> None:
        pipeline = self.pipelines.get(session.stream_id)
        if pipeline is None or pipeline.package.ended:
            return
        loop = asyncio.get_running_loop()
        # S 6.2.1-style grace: wait for the publisher before writing ENDLIST.
        pipeline.finish_timer = loop.call_later(
            self.packager.reconnect_window, self._finish, session.stream_id
        )

    def _finish(self, stream_id: str) -> None:
        pipeline = self.pipelines.get(stream_id)
        if pipeline is None:
            return
        pipeline.finish_timer = None

        async def finish() -> None:
            if pipeline.transcoder is not None:
                await pipeline.transcoder.wait()
            pipeline.package.finish()
            log.info("[%s] stream ended: ENDLIST written", stream_id)
            if pipeline.recording is not None:
                await pipeline.recording.close()

        task = asyncio.get_running_loop().create_task(finish())
        pipeline.tasks.add(task)
        task.add_done_callback(lambda t: _task_done(pipeline, t))

    async def close(self) -> None:
        """Stop every transcoder (flushing it) and end every playlist."""
        for stream_id, pipeline in self.pipelines.items():
            if pipeline.finish_timer is not None:
                pipeline.finish_timer.cancel()
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
