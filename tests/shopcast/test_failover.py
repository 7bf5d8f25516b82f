"""What an origin taking a show over reads: the show's start and owner from the stream's lease,
the show's tags from the store (both backends)."""

from __future__ import annotations

import asyncio

from shopcast.failover import LeasedShows
from shopcast.store import LeaseRecord, Store, TagRecord

from .test_store import _tag, store, store_section  # noqa: F401  (fixtures: both backends)


async def test_a_show_taken_over_within_the_gap_is_continued(store: Store) -> None:  # noqa: F811
    held: dict[str, LeaseRecord] = {}
    shows = LeasedShows(store, held.get)
    assert shows.show_start("shop") is None  # no lease known: this origin alone
    first = await store.acquire_lease("shop", "a", ttl=0.2, takeover=False, show_gap=5.0)
    assert first is not None
    held["shop"] = first
    start = shows.show_start("shop")
    assert start is not None and not start.continued and start.owner_epoch == 1
    assert start.started_at == first.show_started_at
    await asyncio.sleep(0.4)  # "a" died: its lease expired
    second = await store.acquire_lease("shop", "b", ttl=5.0, takeover=False, show_gap=5.0)
    assert second is not None
    held["shop"] = second
    start = shows.show_start("shop")
    assert start is not None and start.continued and start.owner_epoch == 2
    assert start.started_at == first.show_started_at  # the same show goes on
    # Once past the gap the next publish is a new show.
    await store.release_lease("shop", "b", 2)
    await asyncio.sleep(0.3)
    third = await store.acquire_lease("shop", "c", ttl=5.0, takeover=False, show_gap=0.2)
    assert third is not None
    held["shop"] = third
    start = shows.show_start("shop")
    assert start is not None and not start.continued and start.owner_epoch == 3


async def test_the_show_tags_are_the_stored_ones_since_its_start(store: Store) -> None:  # noqa: F811
    await store.create_stream("shop")
    await store.create_stream("other")
    records: list[TagRecord] = [
        _tag("t-old", pdt=90.0),  # an earlier show's
        _tag("t-2", pdt=120.0),
        _tag("t-1", pdt=110.0),
        _tag("t-x", stream_id="other", pdt=115.0),
    ]
    for rec in records:
        await store.insert_tag(rec)
    shows = LeasedShows(store, lambda _: None)
    tags = await shows.show_tags("shop", since=100.0)
    assert [t.id for t in tags] == ["t-1", "t-2"]
    assert tags[0].program_date_time == 110.0 and tags[0].product_id == "sku-1"
    assert tags[0].payload == records[2].data
