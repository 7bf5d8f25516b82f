"""The cluster components on a real store (SQLite and PostgreSQL): the node registry's
heartbeats, placement and owners; stream leases admitted, renewed, fenced out and released."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from benchmarks.harness.postgres import requires_postgres
from shopcast.cluster import NodeRegistry, StreamLeases, show_cost
from shopcast.config import ClusterSection, StoreSection
from shopcast.store import Store, make_store

BACKENDS = ["sqlite", pytest.param("postgresql", marks=requires_postgres)]
TTL = 0.6


@pytest.fixture(params=BACKENDS)
def store_section(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSection:
    if request.param == "sqlite":
        return StoreSection(path=str(tmp_path / "db.sqlite3"))
    return StoreSection(url=request.getfixturevalue("postgres_url"))


@pytest.fixture
async def stores(store_section: StoreSection) -> AsyncIterator[tuple[Store, Store]]:
    """Two nodes' connections to one store."""
    a, b = make_store(store_section), make_store(store_section)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


class Node:
    """One origin's leases, with a show that is 'here' while ``shows`` holds its id."""

    def __init__(self, store: Store, node_id: str, on_duplicate: str = "takeover") -> None:
        self.shows: set[str] = set()
        self.lost: list[tuple[str, str]] = []
        self.leases = StreamLeases(
            store,
            TTL,
            on_duplicate=on_duplicate,
            show_gap=5.0,
            shows_here=lambda s: s in self.shows,
            on_lost=self._lost,
        )
        self.leases.node_id = node_id

    async def _lost(self, stream_id: str, reason: str) -> None:
        self.shows.discard(stream_id)
        self.lost.append((stream_id, reason))

    async def publish(self, stream_id: str) -> str | None:
        refusal = await self.leases.admit(stream_id)
        if refusal is None:
            self.shows.add(stream_id)
        return refusal


async def test_takeover_fences_the_former_owner_out(stores: tuple[Store, Store]) -> None:
    a, b = Node(stores[0], "a"), Node(stores[1], "b")
    assert await a.publish("shop") is None
    assert a.leases.holds("shop")
    assert await b.publish("shop") is None  # takeover: epoch 2
    assert b.leases.held["shop"].epoch == 2
    await b.leases.renew()
    assert a.lost == []  # a does not know yet…
    await a.leases.renew()  # …until its renewal finds itself fenced out
    assert a.lost == [("shop", "lease for shop lost to node b (epoch 2)")]
    assert not a.leases.holds("shop") and "shop" not in a.leases.held
    owner = await stores[0].lease_of("shop")
    assert owner is not None and (owner.node_id, owner.epoch) == ("b", 2)


async def test_reject_refuses_a_stream_owned_by_another_live_node(
    stores: tuple[Store, Store],
) -> None:
    a, b = Node(stores[0], "a", "reject"), Node(stores[1], "b", "reject")
    assert await a.publish("shop") is None
    assert await b.publish("shop") == "stream shop is already being published on node a"
    await asyncio.sleep(TTL * 1.5)  # a silent past its lease (a crash): the stream is free
    assert await b.publish("shop") is None
    await a.leases.renew()
    assert a.lost == [("shop", "lease for shop lost to node b (epoch 2)")]


async def test_a_lease_nobody_took_is_taken_again_after_a_silence(
    stores: tuple[Store, Store],
) -> None:
    """A node that could not renew past the ttl stops claiming; when the store answers and
    nobody else took the stream, it is the owner again at a new epoch."""
    a = Node(stores[0], "a")
    await a.publish("shop")
    await asyncio.sleep(TTL * 1.5)
    assert not a.leases.holds("shop")  # unsure: no longer claimed
    await a.leases.renew()
    assert a.lost == [] and a.leases.holds("shop")
    assert a.leases.held["shop"].epoch == 2


async def test_lease_released_when_the_show_is_over_here(stores: tuple[Store, Store]) -> None:
    a = Node(stores[0], "a")
    await a.publish("shop")
    await a.leases.renew()
    assert await stores[1].lease_of("shop") is not None  # just taken: kept
    a.shows.clear()
    await asyncio.sleep(TTL)
    await a.leases.renew()
    assert await stores[1].lease_of("shop") is None and a.leases.held == {}
    assert a.lost == []


async def test_registry_heartbeats_places_and_names_owners(stores: tuple[Store, Store]) -> None:
    busy = [2.5]
    a = NodeRegistry(stores[0], ClusterSection(capacity=4, node_timeout=TTL), load=lambda: busy[0])
    b = NodeRegistry(stores[1], ClusterSection(capacity=2, node_timeout=TTL))
    await a.start("a", "http://a:8080", "rtmp://a:1935/live")
    await b.start("b", "http://b:8080", "rtmp://b:1935/live", "srt://b:9000")
    await a.heartbeat()
    nodes = {n.node_id: n for n in await a.nodes()}
    assert (nodes["a"].load, nodes["a"].capacity, nodes["b"].srt_url) == (2.5, 4.0, "srt://b:9000")
    placed = await a.placement()
    assert placed is not None and placed.node_id == "b"  # 2 free slots against 1.5
    busy[0] = 0.0
    await a.heartbeat()
    placed = await b.placement()
    assert placed is not None and placed.node_id == "a"
    # owner_of: the node behind the stream's live lease
    leases = StreamLeases(
        stores[1],
        TTL,
        on_duplicate="takeover",
        show_gap=0.0,
        shows_here=lambda s: True,
        on_lost=lambda s, r: asyncio.sleep(0),
    )
    leases.node_id = "b"
    assert await a.owner_of("shop") is None
    await leases.admit("shop")
    owner = await a.owner_of("shop")
    assert owner is not None and (owner.node_id, owner.http_url) == ("b", "http://b:8080")
    view = await a.view()
    assert view.origin("shop") == owner and view.viewers("shop") == 0
    # a node silent past node_timeout is dead: no placement there
    await asyncio.sleep(TTL * 1.2)
    await b.heartbeat()
    placed = await b.placement()
    assert placed is not None and placed.node_id == "b"
    await a.close()
    assert [n.node_id for n in await b.nodes()] == ["b"]  # a clean stop leaves the table


async def test_registry_run_retries_and_re_registers(store_section: StoreSection) -> None:
    """The heartbeat loop survives a store that fails, and registers again once it answers."""
    store = make_store(store_section)
    await store.open()
    registry = NodeRegistry(store, ClusterSection(node_timeout=0.3))
    await registry.start("a", "http://a:8080", "rtmp://a:1935/live")
    beats: list[int] = []

    async def counted() -> None:
        beats.append(1)

    registry.on_heartbeat.append(counted)
    task = asyncio.create_task(registry.run())
    try:
        await store.remove_node("a")  # as if the database had lost the row
        async with asyncio.timeout(5):
            while not any(n.node_id == "a" for n in await store.list_nodes(1.0)):
                await asyncio.sleep(0.05)
        assert beats  # the leases renew with every beat
    finally:
        task.cancel()
        await asyncio.wait({task})
        await store.close()


def test_show_cost_weighs_transcoding() -> None:
    assert show_cost([]) == 1.0  # ladder not known yet: the worst
    assert show_cost([(True, True), (False, False)]) == 0.25  # passthrough video + audio
    assert show_cost([(True, True), (True, False), (False, False)]) == 1.0
