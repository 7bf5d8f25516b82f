"""A show moving between origins: what its new owner reads from the stream's lease (where the
show stands) and from the store (the show's tags), for :class:`shopcast.pipeline.Pipelines`."""

from __future__ import annotations

from collections.abc import Callable

from packager.show import ShowStart
from packager.tags import Tag
from shopcast.recordings import tag_of
from shopcast.store import LeaseRecord, Store


def show_start_of(lease: LeaseRecord) -> ShowStart:
    """The show as the lease says: its start, its owner count, and whether it goes on from
    another owner. The store keeps ``show_started_at`` when the previous lease was live or
    ended within the reconnect window, and sets ``acquired_at`` anew on every change of owner:
    a show older than this node's hold on it was live elsewhere moments ago (or on this node
    before a restart, which is the same for its viewers)."""
    return ShowStart(
        started_at=lease.show_started_at,
        owner_epoch=lease.epoch,
        continued=lease.show_started_at < lease.acquired_at,
    )


class LeasedShows:
    """A :class:`shopcast.pipeline.ShowSource` over the leases this node holds and the store."""

    def __init__(self, store: Store, held: Callable[[str], LeaseRecord | None]) -> None:
        self.store = store
        self.held = held  # the lease this node took on a stream at publish admission

    def show_start(self, stream_id: str) -> ShowStart | None:
        lease = self.held(stream_id)
        return show_start_of(lease) if lease is not None else None

    async def show_tags(self, stream_id: str, since: float) -> list[Tag]:
        # Every acknowledged tag is in the store (stored before its 201).
        records = await self.store.list_tags(stream_id)
        tags = [tag_of(r) for r in records if r.program_date_time >= since]
        return sorted(tags, key=lambda t: t.program_date_time)
