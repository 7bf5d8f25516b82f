"""Replay on the server side: which shows are recorded, their rows, webhooks, crash recovery,
retention, and the recordings as the origin's ``/vod`` routes and the API see them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

from packager.origin import VodRecording
from packager.recorder import RECORDING_ID_RE, Recorder, Recording
from packager.stores import RecordingStore, StoreUnavailable
from packager.tags import Tag
from packager.vod import Manifest, manifest_summary, tags_in
from shopcast.config import RecordSection
from shopcast.hooks import Webhooks
from shopcast.store import DatabaseUnavailable, RecordingRecord, Store, StreamRecord, TagRecord

log = logging.getLogger(__name__)
#: How often the retention sweep looks for recordings past ``retention_days``.
SWEEP_INTERVAL = 3600.0
#: Retries of a recording row the database did not take: first after this many seconds,
#: doubling up to the maximum; at shutdown, how long to wait for the rows still pending.
RETRY_FIRST, RETRY_MAX, FLUSH_TIMEOUT = 0.5, 5.0, 5.0


def tag_of(rec: TagRecord) -> Tag:
    """The packager's view of a stored tag (its DATERANGE line renders the same as live)."""
    return Tag(
        id=rec.id,
        kind=rec.kind,
        time=Fraction(0),  # only the program date-time places it in a recording
        program_date_time=rec.program_date_time,
        payload=rec.data,
        duration=rec.duration,
        product_id=rec.product_id,
    )


class Recordings:
    """Opens a recording per show, keeps its row in the store, recovers and sweeps old ones."""

    def __init__(
        self,
        section: RecordSection,
        store: Store,
        media: RecordingStore,
        webhooks: Webhooks,
        vod_url: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.section = section
        self.store = store
        self.media = media
        self.webhooks = webhooks
        self.vod_url = vod_url
        self.clock = clock
        self.recorder = Recorder(media, queue_size=section.queue_size, listener=self, clock=clock)
        #: Awaited with the id before a recording's media go (e.g. its clips go with it).
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._recovered: list[tuple[str, str, Manifest]] = []  # announced once HTTP is up
        #: Each stream's ``record`` flag as read when its publisher's key was checked.
        self._record_flags: dict[str, bool] = {}
        #: The newest row of each recording not yet in the database (written in order by one
        #: task, retried while the database is away: the show goes on meanwhile).
        self._pending: dict[str, RecordingRecord] = {}
        self._writer: asyncio.Task[None] | None = None
        #: This node's id in the cluster, written on its recordings' rows (set at start).
        self.node_id = ""

    # -- life --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the store and close what a crash left open (before the API answers)."""
        try:
            await self.media.start()
            await self.recover()
        except StoreUnavailable as exc:
            # The live shows go on; their recordings fail with the reason.
            log.error("recordings store unavailable: %s", exc)

    def serve(self) -> None:
        """The server is reachable: announce recovered recordings, start the retention sweep."""
        for recording_id, stream_id, manifest in self._recovered:
            self._ready(recording_id, stream_id, manifest)
        self._recovered.clear()
        if self.section.retention_days > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.media.close()
        await self.flush(FLUSH_TIMEOUT)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every pending recording row is in the database."""
        if self._writer is not None and not self._writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except TimeoutError:
                log.error(
                    "recordings: %d row(s) not written: the database is unavailable",
                    len(self._pending),
                )
                self._writer.cancel()

    async def recover(self) -> None:
        """Every recording of this node left ``recording`` by a crash is closed from what the
        store holds (another node's may still be recording there)."""
        for row in await self.store.list_recordings(state="recording"):
            if self.node_id and row.node_id not in ("", self.node_id):
                continue
            try:
                manifest = await self.recorder.recover(row.id)
            except StoreUnavailable as exc:
                log.error("recording %s not recovered: %s", row.id, exc)
                continue
            if manifest is None or manifest.duration <= 0:
                self._queue(
                    _replace(row, state="failed", error="nothing recoverable after a crash")
                )
                log.warning("recording %s: nothing recoverable after a crash", row.id)
                continue
            segments = sum(len(r.segments) for r in manifest.renditions)
            self._save(
                row.id, row.stream_id, "ready", manifest, error=row.error, node_id=row.node_id
            )
            self._recovered.append((row.id, row.stream_id, manifest))
            log.info(
                "recording %s recovered after a crash: %d segments on %d renditions, "
                "%.1f s, %d bytes",
                row.id,
                segments,
                len(manifest.renditions),
                manifest.duration,
                manifest.byte_count,
            )
        await self.flush()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(SWEEP_INTERVAL)

    async def sweep(self) -> int:
        """Delete recordings that ended more than ``retention_days`` ago; how many."""
        if self.section.retention_days <= 0:
            return 0
        cutoff = self.clock() - self.section.retention_days * 86400
        removed = 0
        for row in await self.store.recordings_ended_before(cutoff):
            await self.delete(row.id)
            removed += 1
        if removed:
            log.info("retention: %d recording(s) older than %g days deleted", removed, cutoff)
        return removed

    # -- RecordingOpener ---------------------------------------------------------------
    def stream_published(self, stream: StreamRecord) -> None:
        """A publisher's key was just checked: its stream's row as of now decides the show."""
        self._record_flags[stream.id] = stream.record

    def open_recording(self, stream_id: str, target_duration: int) -> Recording | None:
        if not self.section.enabled or not self._record_flags.get(stream_id, True):
            return None
        return self.recorder.open(stream_id, target_duration)

    # -- RecordingListener -------------------------------------------------------------
    def recording_started(self, recording: Recording) -> None:
        self._save_live(recording)
        self.webhooks.emit(
            "recording.started",
            {
                "id": recording.id,
                "stream_id": recording.stream_id,
                "started_at": recording.manifest.started_at,
            },
        )

    def recording_changed(self, recording: Recording) -> None:
        self._save_live(recording)

    def recording_ended(self, recording: Recording) -> None:
        self._save_live(recording)
        if recording.state == "ready":
            self._ready(recording.id, recording.stream_id, recording.manifest)

    def _ready(self, recording_id: str, stream_id: str, manifest: Manifest) -> None:
        self.webhooks.emit(
            "recording.ready",
            {
                "id": recording_id,
                "stream_id": stream_id,
                "duration": round(manifest.duration, 3),
                "bytes": manifest.byte_count,
                "playback_url": self.vod_url(recording_id),
            },
        )

    def _save_live(self, recording: Recording) -> None:
        self._save(
            recording.id,
            recording.stream_id,
            recording.state,
            recording.manifest,
            error=recording.error,
            degraded=recording.degraded,
        )

    def _save(
        self,
        recording_id: str,
        stream_id: str,
        state: str,
        manifest: Manifest,
        *,
        error: str | None = None,
        degraded: str | None = None,
        node_id: str | None = None,
    ) -> None:
        self._queue(
            RecordingRecord(
                id=recording_id,
                stream_id=stream_id,
                state=state,
                store=self.media.name,
                started_at=manifest.started_at,
                ended_at=manifest.ended_at,
                duration=round(manifest.duration, 3),
                bytes=manifest.byte_count,
                renditions=[r.name for r in manifest.renditions],
                error=error,
                degraded=degraded,
                node_id=self.node_id if node_id is None else node_id,
            )
        )

    def _queue(self, row: RecordingRecord) -> None:
        self._pending[row.id] = row  # a newer state of the same recording replaces the older
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        delay = RETRY_FIRST
        while self._pending:
            row = next(iter(self._pending.values()))
            try:
                await self.store.save_recording(row)
            except DatabaseUnavailable as exc:
                if delay == RETRY_FIRST:
                    log.warning("recording %s: row not saved yet, retrying: %s", row.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            if self._pending.get(row.id) is row:
                del self._pending[row.id]

    # -- queries -----------------------------------------------------------------------
    async def get(self, recording_id: str) -> RecordingRecord | None:
        if not RECORDING_ID_RE.match(recording_id):
            return None
        return self._pending.get(recording_id) or await self.store.get_recording(recording_id)

    async def for_stream(self, stream_id: str) -> list[RecordingRecord]:
        """The stream's recordings, oldest first (rows not yet written included)."""
        rows = {r.id: r for r in await self.store.list_recordings(stream_id)}
        rows.update((r.id, r) for r in self._pending.values() if r.stream_id == stream_id)
        return sorted(rows.values(), key=lambda r: r.started_at)

    async def describe(self, row: RecordingRecord) -> dict[str, Any]:
        """A recording as the API shows it (live figures while it records)."""
        active = self.recorder.active.get(row.id)
        manifest = active.manifest if active is not None else None
        if manifest is None and row.state == "ready":
            try:
                manifest = await self.recorder.manifest(row.id)
            except StoreUnavailable:
                manifest = None
        tags = 0
        if manifest is not None:
            stream_tags = map(tag_of, await self.store.list_tags(row.stream_id))
            tags = len(tags_in(stream_tags, manifest.time_range))
        out: dict[str, Any] = {
            "id": row.id,
            "stream_id": row.stream_id,
            "state": row.state,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
            "duration": round(manifest.duration, 3) if manifest else row.duration,
            "bytes": manifest.byte_count if manifest else row.bytes,
            "renditions": manifest_summary(manifest)["renditions"] if manifest else [],
            "tags": tags,
            "playback_url": self.vod_url(row.id),
            "store": row.store,
            "error": row.error,
            "degraded": row.degraded,
        }
        return out

    async def delete(self, recording_id: str) -> int:
        """Remove a recording's media and its row; how many objects were removed."""
        for hook in self.on_delete:
            await hook(recording_id)
        removed = await self.recorder.delete(recording_id)
        self._pending.pop(recording_id, None)
        await self.store.delete_recording(recording_id)
        return removed

    # -- VodSource ---------------------------------------------------------------------
    async def vod(self, recording_id: str) -> VodRecording | None:
        row = await self.get(recording_id)
        if row is None or (row.state == "failed" and row.bytes == 0):
            return None
        manifest = await self.recorder.manifest(row.id)
        if manifest is None:
            return None
        tags = tags_in(map(tag_of, await self.store.list_tags(row.stream_id)), manifest.time_range)
        ended = row.id not in self.recorder.active
        return VodRecording(manifest, tags, ended)


def _replace(row: RecordingRecord, **changes: Any) -> RecordingRecord:
    return RecordingRecord(**{**row.__dict__, **changes})
