"""Tag thumbnails: a JPEG of each tag's frame on the top rung, made once on first request.

The frame is decoded from its segment's IDR up to it (worker thread), from the live window while
the stream still holds that segment, else from the show's recording. JPEGs are kept in a
bounded in-memory cache (a tag's frame never changes).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

from packager.playlist import Segment
from packager.posters import frame_jpeg
from shopcast.pipeline import Pipelines
from shopcast.store import Store

#: A frame's program date-time and a segment's agree to well under a frame (both on the grid).
_SLACK = 0.001


class Thumbnails:
    """JPEG of the frame each tag names, per tag id; ``None`` when no media holds it."""

    def __init__(self, store: Store, pipelines: Pipelines, capacity: int = 512) -> None:
        self.store = store
        self.pipelines = pipelines
        self.capacity = capacity
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._making: dict[str, asyncio.Future[bytes | None]] = {}

    async def get(self, stream_id: str, tag_id: str) -> bytes | None:
        jpeg = self._cache.get(tag_id)
        if jpeg is not None:
            self._cache.move_to_end(tag_id)
            return jpeg
        making = self._making.get(tag_id)
        if making is not None:  # someone asked first: one decode per tag
            return await asyncio.shield(making)
        tag = next((t for t in self.store.list_tags(stream_id) if t.id == tag_id), None)
        if tag is None:
            return None
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._making[tag_id] = future
        try:
            jpeg = await self._live(stream_id, tag.program_date_time)
            future.set_result(jpeg)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it re-raised, nobody logs it twice
            raise
        finally:
            del self._making[tag_id]
        if jpeg is not None:
            self._cache[tag_id] = jpeg
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return jpeg

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
