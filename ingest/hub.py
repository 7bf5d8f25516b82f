"""The stream hub: one per live stream; fans media units out to readers through bounded queues.

The publisher never waits on a reader (MediaMTX ``internal/stream`` habit): a full queue drops
the unit, counts the drop and makes that reader skip video until the next keyframe, so what a
slow reader does get stays decodable.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.media import MediaKind, MediaUnit

log = logging.getLogger(__name__)


@dataclass
class ReaderStats:
    """What one reader received and lost."""

    delivered: int = 0
    dropped: int = 0


class HubReader:
    """A reader's bounded queue; ``await get()`` gives units in order, ``None`` at the end.

    One consumer per reader (one task awaits ``get``).
    """

    def __init__(self, hub: StreamHub, name: str, maxsize: int) -> None:
        self.hub = hub
        self.name = name
        self.maxsize = maxsize
        self.stats = ReaderStats()
        self._queue: collections.deque[MediaUnit] = collections.deque()
        # The consumer's wake-up while its queue is empty: a bare future, made only when it
        # waits (an asyncio.Event per unit cost ~8 % of the loop in its loop lookups).
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._await_keyframe = False
        self._end_at_keyframe = False

    def _offer(self, unit: MediaUnit) -> None:
        if self._closed:
            return
        # Both flags are off in steady state: the keyframe gate costs one test per unit then.
        if (self._await_keyframe or self._end_at_keyframe) and (
            unit.kind is MediaKind.VIDEO and not unit.is_config
        ):
            if self._end_at_keyframe and unit.keyframe:
                self._end()  # a reader attached now starts at this very unit
                return
            if self._await_keyframe and not unit.keyframe:
                self.stats.dropped += 1
                return
            self._await_keyframe = False
        queue = self._queue
        if len(queue) >= self.maxsize and not unit.is_config:
            self.stats.dropped += 1
            if unit.kind is MediaKind.VIDEO:
                # A lost frame breaks the decode chain until the next IDR.
                self._await_keyframe = True
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.warning(
                    "[%s] reader %s is too slow: %d units dropped",
                    self.hub.stream_id,
                    self.name,
                    self.stats.dropped,
                )
            return
        queue.append(unit)
        # The consumer waits only while its queue is empty: one wake-up per batch of units
        # offered before it runs again, however many there are.
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # not cancelled with its consumer
                waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # not cancelled with its consumer
                waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        self._wake()

    def get_nowait(self) -> MediaUnit | None:
        """Next queued unit, or ``None`` if the queue is empty."""
        if self._queue:
            self.stats.delivered += 1
            return self._queue.popleft()
        return None

    async def get(self) -> MediaUnit | None:
        """Wait for the next unit; ``None`` once the hub has ended and the queue is drained."""
        while not self._queue:
            if self._closed:
                return None
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._waiter = self._loop.create_future()
            await self._waiter
        self.stats.delivered += 1
        return self._queue.popleft()

    def __aiter__(self) -> HubReader:
        return self

    async def __anext__(self) -> MediaUnit:
        # get()'s body, not a call to it: one coroutine per unit instead of two.
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._waiter = self._loop.create_future()
            await self._waiter
        self.stats.delivered += 1
        return self._queue.popleft()

    def close(self) -> None:
        """Detach from the hub."""
        self.hub.remove_reader(self)

    def end_at_keyframe(self) -> None:
        """End just before the next video keyframe (``close()`` it afterwards): a reader
        attached now starts at that keyframe, so the two meet with no unit lost or doubled."""
        self._end_at_keyframe = True

    @property
    def queued(self) -> int:
        return len(self._queue)


class StreamHub:
    """Fan-out point of one stream's media: ``publish()`` never blocks, readers attach at any time.

    A reader that attaches late first receives the latest codec configuration of each track and
    then waits for the next video keyframe.
    """

    def __init__(self, stream_id: str, default_queue_size: int = 512) -> None:
        self.stream_id = stream_id
        self.default_queue_size = default_queue_size
        self._readers: list[HubReader] = []
        self._configs: dict[MediaKind, MediaUnit] = {}
        self.ended = False
        self.units_published = 0

    def add_reader(self, name: str, maxsize: int | None = None) -> HubReader:
        """Attach a reader with its own bounded queue."""
        reader = HubReader(self, name, maxsize or self.default_queue_size)
        for cfg in self._configs.values():
            reader._offer(cfg)
        if self.units_published:
            reader._await_keyframe = MediaKind.VIDEO in self._configs
        if self.ended:
            reader._end()
        self._readers.append(reader)
        return reader

    def remove_reader(self, reader: HubReader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
        reader._end()

    def publish(self, unit: MediaUnit) -> None:
        """Offer ``unit`` to every reader; full queues drop it (counted), nothing waits."""
        if self.ended:
            raise RuntimeError(f"stream {self.stream_id}: publish after end")
        if unit.is_config:
            self._configs[unit.kind] = unit
        self.units_published += 1
        for reader in self._readers:
            reader._offer(unit)

    def end(self) -> None:
        """The publisher is gone: readers drain their queues and then get ``None``."""
        self.ended = True
        for reader in self._readers:
            reader._end()

    @property
    def readers(self) -> Iterator[HubReader]:
        return iter(list(self._readers))

    @property
    def dropped(self) -> int:
        return sum(r.stats.dropped for r in self._readers)
