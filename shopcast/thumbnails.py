"""Tag thumbnails: a JPEG of each tag's frame on the top rung, made once on first request.

The frame is decoded from its segment's IDR up to it (worker thread), from the live window while
the stream still holds that segment, else from the show's recording. JPEGs are kept in a
bounded in-memory cache (a tag's frame never changes).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence

from packager.playlist import Segment
from packager.posters import frame_jpeg
from shopcast.clips import Timeline, top_rendition
from shopcast.pipeline import Pipelines
from shopcast.recordings import Recordings
from shopcast.store import Store

#: A frame's program date-time and a segment's agree to well under a frame (both on the grid).
_SLACK = 0.001


class Thumbnails:
    """JPEG of the frame each tag names, per tag id; ``None`` when no media holds it."""

    def __init__(
        self, store: Store, pipelines: Pipelines, recordings: Recordings, capacity: int = 512
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.recordings = recordings
        self.capacity = capacity
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._making: dict[str, asyncio.Future[bytes | None]] = {}

    async def get(self, stream_id: str, tag_id: str) -> bytes | None:
        """The tag's frame: from the live window while it holds it, else from a recording."""

        async def make() -> bytes | None:
            tags = await self.store.list_tags(stream_id)
            tag = next((t for t in tags if t.id == tag_id), None)
            if tag is None:
                return None
            pdt = tag.program_date_time
            return await self._live(stream_id, pdt) or await self._recorded(stream_id, pdt)

        # Keyed by stream too: a tag's picture is served only under its own stream's path
        # (where that stream's playback token applies).
        return await self._once(f"tag:{stream_id}/{tag_id}", make)

    async def recording_poster(self, recording_id: str) -> bytes | None:
        """A recording's cover: its first product tag's frame, else its middle segment's IDR."""
        vod = await self.recordings.vod(recording_id)
        rendition = top_rendition(vod.manifest.renditions) if vod is not None else None
        if vod is None or rendition is None:
            return None
        products = [t for t in vod.tags if t.kind == "product"]
        segments = rendition.segments
        if products:
            pdt = products[0].program_date_time
        else:
            pdt = segments[len(segments) // 2].program_date_time
        prefix = f"{vod.manifest.id}/{rendition.name}"

        async def make() -> bytes | None:
            return await self._from_recording(prefix, Timeline(rendition), pdt)

        if not vod.ended:  # still growing: its middle moves on
            return await make()
        return await self._once(f"recording:{recording_id}", make)

    async def _once(self, key: str, make: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        """``make()`` once per key however many ask at once; kept (LRU) once it has a JPEG."""
        jpeg = self._cache.get(key)
        if jpeg is not None:
            self._cache.move_to_end(key)
            return jpeg
        making = self._making.get(key)
        if making is not None:
            return await asyncio.shield(making)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._making[key] = future
        try:
            jpeg = await make()
            future.set_result(jpeg)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it re-raised, nobody logs it twice
            raise
        finally:
            del self._making[key]
        if jpeg is not None:
            self._cache[key] = jpeg
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return jpeg

    async def _recorded(self, stream_id: str, pdt: float) -> bytes | None:
        """From the recording of the show that holds the date, if any."""
        for row in await self.store.list_recordings(stream_id):
            if row.started_at > pdt + _SLACK:
                continue
            vod = await self.recordings.vod(row.id)
            rendition = top_rendition(vod.manifest.renditions) if vod is not None else None
            if vod is None or rendition is None:
                continue
            prefix = f"{vod.manifest.id}/{rendition.name}"
            jpeg = await self._from_recording(prefix, Timeline(rendition), pdt)
            if jpeg is not None:
                return jpeg
        return None

    async def _from_recording(self, prefix: str, timeline: Timeline, pdt: float) -> bytes | None:
        i = timeline.index_of(pdt)
        if i is None:
            return None
        seg = timeline.segments[i]
        media = self.recordings.media
        init, data = (
            await media.get(f"{prefix}/init.mp4"),
            await media.get(f"{prefix}/{seg.msn}.m4s"),
        )
        if init is None or data is None:
            return None
        offset = max(pdt - seg.program_date_time, 0.0)
        return await asyncio.to_thread(frame_jpeg, init, data, offset)

    async def _live(self, stream_id: str, pdt: float) -> bytes | None:
        """From the live window: waits (up to 3 target durations) for the frame's segment."""
        package = self.pipelines.package(stream_id)
        rendition = package.top_rendition() if package is not None else None
        if package is None or rendition is None:
            return None
        segments = rendition.state.segments
        if segments and pdt + _SLACK >= segments[-1].program_date_time:
            # The frame may be in the segment being cut (or just ahead of it).
            td = rendition.state.target_duration
            await rendition.wait_until(lambda: _holding(segments, pdt) is not None, 3 * td)
        seg = _holding(segments, pdt)
        if seg is None:
            return None
        data, init = rendition.files.get(seg.uri), rendition.files.get(rendition.state.init_uri)
        if data is None or init is None:
            return None
        offset = pdt - seg.program_date_time
        return await asyncio.to_thread(frame_jpeg, init, data, max(offset, 0.0))


def _holding(segments: Sequence[Segment], pdt: float) -> Segment | None:
    """The complete segment whose time span holds the date ``pdt``."""
    for seg in reversed(segments):
        if seg.program_date_time <= pdt + _SLACK:
            end = seg.program_date_time + float(seg.duration)
            return seg if seg.complete and pdt < end - _SLACK else None
    return None
