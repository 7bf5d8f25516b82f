"""Recording shows as they go: each rendition's init and every completed segment into a
:class:`~packager.stores.RecordingStore`, with a manifest that grows with them.

Media never waits for the store: the live packager hands bytes to a bounded queue
(:meth:`Recording.segment_completed` is a ``put_nowait``); one task per recording writes them.
A full queue degrades the recording (the segment is left out, the next one follows a
discontinuity), a store failure fails it, each with its reason; the live show goes on either way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from packager.fmp4 import fragment_timing
from packager.playlist import Segment, Variant
from packager.stores import Blob, RecordingStore, StoreUnavailable, blob_size
from packager.vod import Manifest, RenditionRecord, SegmentRecord

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Parsed manifests of finished recordings kept for the /vod routes (a 2-hour show's is ~1 MB).
MANIFEST_CACHE = 32
#: ``secrets.token_urlsafe(16)``: 128 random bits, 22 URL-safe characters.
RECORDING_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_SEGMENT_KEY = re.compile(
    r"^(?P<rendition>[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63})/(?P<msn>\d{1,19})\.m4s$"
)
#: Seconds between manifest rewrites while recording (and at every discontinuity): segment
#: files written in between are timed from their own bytes after a crash, so this only bounds
#: how much recovery has to read; rewriting a growing manifest per segment would cost O(n²).
MANIFEST_INTERVAL = 30.0
#: A gap on the timeline larger than this (seconds) between two recovered segments was a
#: publisher reconnect (the packager moves the timeline on by a whole segment).
_CONTIGUOUS = 0.1


class SegmentSink(Protocol):
    """What the live packager tells a recording (``LivePackage.sink``)."""

    def rendition_started(
        self, name: str, init: bytes, variant: Variant, timescale: int, track_id: int
    ) -> None:
        """A rendition's init segment exists (its track layout never changes afterwards)."""

    def segment_completed(self, rendition: str, segment: Segment, data: Blob) -> None:
        """``segment`` of ``rendition`` is complete; ``data`` is its bytes (its parts' bytes in
        order, as they were cut: the store writes them without joining them)."""

    def init_added(self, rendition: str, uri: str, init: bytes) -> None:
        """Another init of ``rendition`` (a slate's), named by segments' ``map_uri``."""


class RecordingListener(Protocol):
    """Told of a recording's life (the server keeps its row, sends webhooks)."""

    def recording_started(self, recording: Recording) -> None: ...

    def recording_changed(self, recording: Recording) -> None:
        """It degraded or failed (``recording.degraded`` / ``recording.error`` say why)."""

    def recording_ended(self, recording: Recording) -> None: ...


@dataclass
class RecorderStats:
    """Counters for metrics, per stream id (bounded: stream ids come from the store)."""

    bytes: collections.Counter[str] = field(default_factory=collections.Counter)
    segments: collections.Counter[str] = field(default_factory=collections.Counter)
    #: (stream id, "queue_full" | "store") → count
    failures: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)


@dataclass(frozen=True)
class _Put:
    key: str
    data: Blob
    content_type: str
    rendition: str | None = None  # set for a segment: its manifest entry follows the bytes
    entry: SegmentRecord | None = None


def new_recording_id() -> str:
    """Unguessable: 128 random bits (paths come from it, never from user input)."""
    return secrets.token_urlsafe(16)


class Recording:
    """One recording of one stream's show (a :class:`SegmentSink`)."""

    def __init__(
        self,
        recorder: Recorder,
        stream_id: str,
        target_duration: int,
        recording_id: str | None = None,
    ) -> None:
        self.recorder = recorder
        self.id = recording_id or new_recording_id()
        self.stream_id = stream_id
        self.state = "recording"  # then "ready" or "failed"
        self.error: str | None = None
        self.degraded: str | None = None
        self.dropped = 0
        self.manifest = Manifest(self.id, stream_id, recorder.clock(), target_duration)
        self.started = False
        self._queue: asyncio.Queue[_Put | None] = asyncio.Queue(recorder.queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._gap: set[str] = set()  # renditions whose next segment follows a dropped one
        self._dirty = False
        self._closed = False
        self._manifest_written = False
        self._manifest_due = 0.0  # clock time of the next periodic manifest rewrite

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- SegmentSink -------------------------------------------------------------------
    def rendition_started(
        self, name: str, init: bytes, variant: Variant, timescale: int, track_id: int
    ) -> None:
        if self.manifest.rendition(name) is not None:
            return  # a reconnect: the same rendition goes on (its init does not change)
        self.manifest.renditions.append(
            RenditionRecord(
                name=name,
                codecs=variant.codecs,
                bandwidth=variant.bandwidth,
                width=variant.width,
                height=variant.height,
                frame_rate=float(variant.frame_rate) if variant.frame_rate else None,
                timescale=timescale,
                track_id=track_id,
            )
        )
        self.manifest.renditions.sort(key=lambda r: -r.bandwidth)
        self._dirty = True
        self._enqueue(_Put(f"{self.id}/{name}/init.mp4", init, "video/mp4"))
        if not self.started:
            self.started = True
            self.recorder.recording_started(self)

    def segment_completed(self, rendition: str, segment: Segment, data: Blob) -> None:
        entry = SegmentRecord(
            msn=segment.msn,
            duration=round(float(segment.duration), 6),
            program_date_time=round(segment.program_date_time, 6),
            discontinuity=segment.discontinuity or rendition in self._gap,
            bytes=blob_size(data),
            start=round(float(segment.start), 6),
            map=segment.map_uri,
        )
        key = f"{self.id}/{rendition}/{segment.msn}.m4s"
        if self._enqueue(_Put(key, data, "video/iso.segment", rendition, entry)):
            self._gap.discard(rendition)
        else:
            self._gap.add(rendition)

    def init_added(self, rendition: str, uri: str, init: bytes) -> None:
        self._enqueue(_Put(f"{self.id}/{rendition}/{uri}", init, "video/mp4"))

    # -- writing -----------------------------------------------------------------------
    def _enqueue(self, put: _Put) -> bool:
        if self.state != "recording":
            return False
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._write_all(), name=f"recording-{self.stream_id}"
            )
        try:
            self._queue.put_nowait(put)
        except asyncio.QueueFull:
            self.dropped += 1
            self.recorder.stats.failures[self.stream_id, "queue_full"] += 1
            self._degrade(f"the store is too slow: {self.dropped} segment(s) left out (queue full)")
            return False
        return True

    def _degrade(self, reason: str) -> None:
        first = self.degraded is None
        self.degraded = reason
        if first:
            log.warning("[%s] recording %s degraded: %s", self.stream_id, self.id, reason)
            self.recorder.recording_changed(self)

    async def _write_all(self) -> None:
        store, stats = self.recorder.store, self.recorder.stats
        while (put := await self._queue.get()) is not None:
            if self.state == "failed":
                continue  # drain: nothing more is written once the store failed
            try:
                await store.put(put.key, put.data, put.content_type)
                if put.entry is not None and put.rendition is not None:
                    rendition = self.manifest.rendition(put.rendition)
                    if rendition is not None:
                        rendition.segments.append(put.entry)
                    stats.segments[self.stream_id] += 1
                    self._dirty = True
                    if put.entry.discontinuity:  # its date cannot be told from the bytes alone
                        self._manifest_due = 0.0
                stats.bytes[self.stream_id] += blob_size(put.data)
                # Taken, but the store behind is failing (S3 down: the bytes wait in its spool).
                if self.degraded is None and (problem := store.health().last_error):
                    self._degrade(f"{store.name} store: {problem}")
                # Once the inits are in, then periodically, after the batch in the queue.
                due = not self._manifest_written or self.recorder.clock() >= self._manifest_due
                if self._queue.empty() and self._dirty and due:
                    await self._write_manifest()
            except StoreUnavailable as exc:
                self._fail(str(exc))

    async def _write_manifest(self) -> None:
        self._dirty = False
        self._manifest_written = True
        self._manifest_due = self.recorder.clock() + MANIFEST_INTERVAL
        data = self.manifest.to_json()
        await self.recorder.store.put(f"{self.id}/{MANIFEST}", data, "application/json")
        self.recorder.stats.bytes[self.stream_id] += len(data)

    def _fail(self, reason: str) -> None:
        if self.state == "failed":
            return
        self.state, self.error = "failed", reason
        self.recorder.stats.failures[self.stream_id, "store"] += 1
        log.error("[%s] recording %s failed: %s", self.stream_id, self.id, reason)
        self.recorder.recording_changed(self)

    async def close(self) -> None:
        """The show ended: write what is queued, the final manifest, then ``ready``."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
        self.recorder.active.pop(self.id, None)
        if not self.started:
            return  # nothing was ever recorded: no recording
        self.manifest.ended_at = self.recorder.clock()
        if self.state == "recording":
            try:
                await self._write_manifest()
                self.state = "ready"
            except StoreUnavailable as exc:
                self._fail(str(exc))
        log.info(
            "[%s] recording %s %s: %.1f s, %d bytes",
            self.stream_id,
            self.id,
            self.state,
            self.manifest.duration,
            self.manifest.byte_count,
        )
        self.recorder.recording_ended(self)


class Recorder:
    """Every recording of one server: opens them, recovers them after a crash, deletes them."""

    def __init__(
        self,
        store: RecordingStore,
        *,
        queue_size: int = 64,
        listener: RecordingListener | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.listener = listener
        self.clock = clock
        self.active: dict[str, Recording] = {}
        self.stats = RecorderStats()
        self._manifests: collections.OrderedDict[str, Manifest] = collections.OrderedDict()

    def open(self, stream_id: str, target_duration: int) -> Recording:
        """A new recording (it shows up once its first rendition starts)."""
        recording = Recording(self, stream_id, target_duration)
        self.active[recording.id] = recording
        return recording

    def recording_started(self, recording: Recording) -> None:
        log.info("[%s] recording %s started", recording.stream_id, recording.id)
        if self.listener is not None:
            self.listener.recording_started(recording)

    def recording_changed(self, recording: Recording) -> None:
        if self.listener is not None:
            self.listener.recording_changed(recording)

    def recording_ended(self, recording: Recording) -> None:
        if self.listener is not None:
            self.listener.recording_ended(recording)

    async def manifest(self, recording_id: str) -> Manifest | None:
        """The recording's manifest: the live one while recording, else the stored one."""
        active = self.active.get(recording_id)
        if active is not None:
            return active.manifest
        if not RECORDING_ID_RE.match(recording_id):
            return None
        cached = self._manifests.get(recording_id)
        if cached is not None:
            self._manifests.move_to_end(recording_id)
            return cached
        data = await self.store.get(f"{recording_id}/{MANIFEST}")
        if data is None:
            return None
        try:
            manifest = await asyncio.to_thread(Manifest.from_json, data)
        except ValueError:
            log.warning("recording %s: unreadable manifest", recording_id)
            return None
        if manifest.ended_at is not None:  # finished: it never changes again
            self._manifests[recording_id] = manifest
            if len(self._manifests) > MANIFEST_CACHE:
                self._manifests.popitem(last=False)
        return manifest

    async def delete(self, recording_id: str) -> int:
        """Remove every object of a recording; how many there were."""
        if not RECORDING_ID_RE.match(recording_id):
            raise ValueError("not a recording id")
        self._manifests.pop(recording_id, None)
        return await self.store.delete_prefix(f"{recording_id}/")

    async def recover(self, recording_id: str) -> Manifest | None:
        """Close a recording a crash left open, from what the store holds: the manifest's
        segments whose files exist, plus segment files written after its last rewrite (timed
        from their own ``tfdt``/``trun``). ``None`` when nothing playable is there."""
        manifest = await self.manifest(recording_id)
        if manifest is None:
            return None
        self._manifests.pop(recording_id, None)
        keys = await self.store.list(f"{recording_id}/")
        files: dict[str, set[int]] = collections.defaultdict(set)
        for key in keys:
            match = _SEGMENT_KEY.match(key[len(recording_id) + 1 :])
            if match:
                files[match["rendition"]].add(int(match["msn"]))
        for rendition in manifest.renditions:
            have = files.get(rendition.name, set())
            rendition.segments = [s for s in rendition.segments if s.msn in have]
            listed = {s.msn for s in rendition.segments}
            last = max(listed, default=-1)
            for msn in sorted(m for m in have if m > last):
                entry = await self._timed(recording_id, rendition, msn)
                if entry is not None:
                    rendition.segments.append(entry)
        manifest.ended_at = (manifest.time_range or (manifest.started_at, manifest.started_at))[1]
        await self.store.put(f"{recording_id}/{MANIFEST}", manifest.to_json(), "application/json")
        return manifest

    async def _timed(
        self, recording_id: str, rendition: RenditionRecord, msn: int
    ) -> SegmentRecord | None:
        data = await self.store.get(f"{recording_id}/{rendition.name}/{msn}.m4s")
        timing = fragment_timing(data, rendition.track_id) if data else None
        if data is None or timing is None:
            return None
        start = timing[0] / rendition.timescale
        duration = timing[1] / rendition.timescale
        prev = rendition.segments[-1] if rendition.segments else None
        if prev is None:
            pdt, jump = self.clock(), False
        else:
            pdt = prev.program_date_time + (start - prev.start)
            jump = abs(start - (prev.start + prev.duration)) > _CONTIGUOUS
        return SegmentRecord(msn, round(duration, 6), round(pdt, 6), jump, len(data), start)

    def queue_depths(self) -> Iterable[tuple[str, int]]:
        """Queued segments per stream (summed over its recordings still writing)."""
        depths: collections.Counter[str] = collections.Counter()
        for recording in list(self.active.values()):
            depths[recording.stream_id] += recording.queue_depth
        return depths.items()
