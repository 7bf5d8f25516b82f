"""The store suite, run against both backends: SQLite in a temp file, PostgreSQL started by
the tests (``benchmarks/harness/postgres.py``)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from benchmarks.harness.postgres import PostgresServer, requires_postgres
from benchmarks.harness.serve_env import free_port
from shopcast.config import StoreSection
from shopcast.store import (
    DatabaseUnavailable,
    NodeRecord,
    RecordingRecord,
    Store,
    StoreError,
    TagRecord,
    make_store,
)
from shopcast.store import sqlite as sqlite_store
from shopcast.store.migrations import DIALECTS, Migration, migrations
from shopcast.store.postgres import PostgresStore

BACKENDS = ["sqlite", pytest.param("postgresql", marks=requires_postgres)]


@pytest.fixture(params=BACKENDS)
def store_section(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSection:
    """Where one test's store lives: a new SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        return StoreSection(path=str(tmp_path / "db.sqlite3"))
    url = request.getfixturevalue("postgres_url")
    return StoreSection(url=url)


@pytest.fixture
async def store(store_section: StoreSection) -> AsyncIterator[Store]:
    s = make_store(store_section)
    await s.open()
    yield s
    await s.close()


def _tag(tag_id: str, stream_id: str = "shop", pdt: float = 100.0) -> TagRecord:
    return TagRecord(
        id=tag_id,
        stream_id=stream_id,
        kind="product",
        product_id="sku-1",
        data={"title": "Grüne Jacke", "z": 1, "a": [1, 2.5, None]},
        duration=30.0,
        pts=123456789012,
        program_date_time=pdt,
        source="api",
        late=False,
        clicks=0,
        created_at=1.5,
    )


async def test_keys_are_long_random_and_unique(store: Store) -> None:
    a = await store.create_stream("a")
    b = await store.create_stream("b")
    assert a.stream_key != b.stream_key
    assert len(a.stream_key) >= 32  # 24 random bytes, base64url: 192 bits


async def test_key_lookup_and_rotation(store: Store) -> None:
    rec = await store.create_stream("shoe-launch")
    assert (await store.stream_for_key(rec.stream_key)).id == "shoe-launch"  # type: ignore[union-attr]
    assert await store.stream_for_key(rec.stream_key + "x") is None
    assert await store.stream_for_key("") is None
    new = await store.rotate_key("shoe-launch")
    assert new.stream_key != rec.stream_key
    assert await store.stream_for_key(rec.stream_key) is None  # old key dead at once
    assert (await store.stream_for_key(new.stream_key)).id == "shoe-launch"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="does not exist"):
        await store.rotate_key("nobody")


@pytest.mark.parametrize("bad", ["", "UPPER", "a/b", "..", "-lead", "x" * 65, "a b"])
async def test_invalid_ids_refused(store: Store, bad: str) -> None:
    with pytest.raises(StoreError):
        await store.create_stream(bad)


async def test_duplicate_id_refused(store: Store) -> None:
    await store.create_stream("demo")
    with pytest.raises(StoreError, match="already exists"):
        await store.create_stream("demo")


async def test_persists_across_reopen(store_section: StoreSection) -> None:
    s = make_store(store_section)
    await s.open()
    rec = await s.create_stream("demo")
    await s.set_setting("api_token", "tok")
    await s.close()
    s2 = make_store(store_section)
    await s2.open()
    assert (await s2.stream_for_key(rec.stream_key)).id == "demo"  # type: ignore[union-attr]
    assert await s2.get_setting("api_token") == "tok"
    assert not await s2.is_empty()
    await s2.close()


async def test_streams_listed_updated_deleted(store: Store) -> None:
    assert await store.is_empty()
    for stream_id in ("b", "a", "c"):
        await store.create_stream(stream_id)
    assert [s.id for s in await store.list_streams()] == ["a", "b", "c"]
    assert (await store.get_stream("a")).record is True  # type: ignore[union-attr]
    await store.set_record("a", False)
    assert (await store.get_stream("a")).record is False  # type: ignore[union-attr]
    assert await store.delete_stream("b") is True
    assert await store.delete_stream("b") is False
    assert await store.get_stream("b") is None
    assert [s.id for s in await store.list_streams()] == ["a", "c"]


async def test_named_inputs_have_own_keys_and_go_with_their_stream(store: Store) -> None:
    shop = await store.create_stream("shop")
    closeup = await store.create_input("shop", "closeup", backup=False)
    backup = await store.create_input("shop", "spare", backup=True)
    assert closeup.stream_key not in (shop.stream_key, backup.stream_key)
    assert await store.input_for_key(closeup.stream_key) == closeup
    assert await store.input_for_key(shop.stream_key) is None  # the main key is the stream's
    assert await store.stream_for_key(closeup.stream_key) is None
    assert [i.name for i in await store.list_inputs("shop")] == ["closeup", "spare"]
    assert (await store.list_inputs("shop"))[1].backup
    for bad in ("main", "slate", "Up", "x" * 33, ""):
        with pytest.raises(StoreError):
            await store.create_input("shop", bad, backup=False)
    with pytest.raises(StoreError, match="already exists"):
        await store.create_input("shop", "closeup", backup=False)
    with pytest.raises(StoreError, match="does not exist"):
        await store.create_input("nope", "closeup", backup=False)
    assert await store.delete_input("shop", "spare") and not await store.delete_input(
        "shop", "spare"
    )
    assert await store.input_for_key(backup.stream_key) is None
    await store.delete_stream("shop")
    assert await store.input_for_key(closeup.stream_key) is None
    await store.create_stream("shop")
    assert await store.list_inputs("shop") == []


async def test_settings_overwrite(store: Store) -> None:
    assert await store.get_setting("x") is None
    await store.set_setting("x", "1")
    await store.set_setting("x", "2")
    assert await store.get_setting("x") == "2"


async def test_tags_round_trip_in_order_with_clicks_and_late(store: Store) -> None:
    await store.insert_tag(_tag("t2", pdt=200.0))
    await store.insert_tag(_tag("t1", pdt=100.0))
    await store.insert_tag(_tag("other", stream_id="elsewhere"))
    await store.set_tag_late("t2")
    assert await store.count_click("shop", "t1") == 1
    assert await store.count_click("shop", "t1") == 2
    assert await store.count_click("elsewhere", "t1") is None  # a tag of another stream
    assert await store.count_click("shop", "nope") is None
    tags = await store.list_tags("shop")
    assert [t.id for t in tags] == ["t1", "t2"]
    assert tags[0] == TagRecord(**{**_tag("t1").__dict__, "clicks": 2})
    assert tags[1].late is True and tags[1].pts == 123456789012


async def test_clicks_counted_by_source(store: Store) -> None:
    await store.insert_tag(_tag("t1"))
    assert await store.count_click("shop", "t1") == 1  # the live page (the default)
    assert await store.count_click("shop", "t1", "replay") == 2
    assert await store.count_click("shop", "t1", "replay") == 3
    assert await store.count_click("other", "t1", "replay") is None
    with pytest.raises(ValueError):
        await store.count_click("shop", "t1", "vod")
    (tag,) = await store.list_tags("shop")
    assert (tag.clicks, tag.clicks_by_source) == (3, {"live": 1, "replay": 2})


def _rec(rid: str, started: float, ended: float | None, state: str) -> RecordingRecord:
    return RecordingRecord(
        rid, "shop", state, "file", started, ended, 1.5, 10, ["180p"], None, None
    )


async def test_recordings_saved_listed_and_deleted(store: Store) -> None:
    await store.save_recording(_rec("r2", 20.0, None, "recording"))
    await store.save_recording(_rec("r1", 10.0, 15.0, "ready"))
    done = RecordingRecord(
        "r2", "shop", "failed", "s3", 20.0, 30.0, 9.0, 99, ["a", "b"], "x", "y", node_id="b"
    )
    await store.save_recording(done)  # an update of the same row
    assert await store.get_recording("r2") == done  # node_id too (migration 5)
    old = await store.get_recording("r1")
    assert old is not None and old.node_id == ""
    assert [r.id for r in await store.list_recordings("shop")] == ["r1", "r2"]
    assert [r.id for r in await store.list_recordings(state="ready")] == ["r1"]
    assert [r.id for r in await store.list_recordings("shop", "failed")] == ["r2"]
    assert await store.list_recordings("nobody") == []
    assert [r.id for r in await store.recordings_ended_before(25.0)] == ["r1"]
    await store.delete_recording("r1")
    assert await store.get_recording("r1") is None


async def test_every_migration_recorded(store: Store) -> None:
    assert await store.schema_version() == len(migrations(store.backend))


def test_both_backends_have_every_migration() -> None:
    versions = [[(m.version, m.name) for m in migrations(d)] for d in DIALECTS]
    assert versions[0] == versions[1] and versions[0][0] == (1, "initial")


async def test_first_start_makes_demo_and_token_once_across_nodes(
    store_section: StoreSection,
) -> None:
    nodes = [make_store(store_section) for _ in range(4)]
    await asyncio.gather(*(n.open() for n in nodes))  # migrations: one at a time
    firsts = await asyncio.gather(*(n.first_start("demo", make_token=True) for n in nodes))
    assert sum(f.new_demo_key is not None for f in firsts) == 1
    assert sum(f.new_api_token is not None for f in firsts) == 1
    assert len({f.api_token for f in firsts}) == 1  # every node serves with the same token
    again = await nodes[0].first_start("demo", make_token=True)
    assert again.new_demo_key is None and again.new_api_token is None
    assert [s.id for s in await nodes[1].list_streams()] == ["demo"]
    for n in nodes:
        await n.close()


def test_files_from_before_versioned_migrations_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE streams (id TEXT PRIMARY KEY, stream_key TEXT NOT NULL, "
        "key_hash BLOB NOT NULL UNIQUE, created_at REAL NOT NULL)"
    )
    db.execute("INSERT INTO streams VALUES ('shop', 'k', x'00', 1.0)")
    db.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO settings VALUES ('api_token', 'old-token')")
    db.commit()
    db.close()

    async def check() -> None:
        store = make_store(StoreSection(path=str(path)))
        await store.open()
        assert (await store.get_stream("shop")).record is True  # type: ignore[union-attr]
        assert await store.get_setting("api_token") == "old-token"
        assert await store.schema_version() == len(migrations("sqlite"))
        await store.insert_tag(_tag("t1"))  # the tables it lacked exist now
        first = await store.first_start("demo", make_token=True)
        assert first.api_token == "old-token" and first.new_demo_key is None
        await store.close()

    asyncio.run(check())


def test_store_file_without_replay_clicks_is_migrated(tmp_path: Path) -> None:
    """A store file from before replay clicks existed: its tags keep their clicks (all of them
    live ones) and count replay clicks from then on."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE tags (id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "product_id TEXT, data TEXT NOT NULL, duration REAL, pts INTEGER NOT NULL, "
        "program_date_time REAL NOT NULL, source TEXT NOT NULL, "
        "late INTEGER NOT NULL DEFAULT 0, clicks INTEGER NOT NULL DEFAULT 0, "
        "created_at REAL NOT NULL);"
        "INSERT INTO tags VALUES ('t1', 'shop', 'product', 'sku', '{}', NULL, 0, 0, 'api', "
        "0, 5, 0);"
    )
    db.commit()
    db.close()

    async def check() -> None:
        for _ in range(2):  # opening a migrated file again changes nothing
            store = make_store(StoreSection(path=str(path)))
            await store.open()
            (tag,) = await store.list_tags("shop")
            assert tag.clicks == 5 + tag.replay_clicks
            assert tag.clicks_by_source["live"] == 5
            assert await store.count_click("shop", "t1", "replay") == 6 + tag.replay_clicks
            await store.close()

    asyncio.run(check())


def test_unversioned_files_keep_columns_later_migrations_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file from before versioning whose code already added a column that a later
    migration adds (as ``ALTER TABLE … ADD COLUMN``) migrates; so does a fresh file."""
    add = Migration(2, "tag_extra", "ALTER TABLE tags ADD COLUMN extra INTEGER NOT NULL DEFAULT 7;")
    monkeypatch.setattr(sqlite_store, "migrations", lambda d: [*migrations(d)[:1], add])
    old = tmp_path / "old.sqlite3"
    db = sqlite3.connect(old)
    db.executescript(migrations("sqlite")[0].sql)  # the tables as that code made them…
    db.execute("ALTER TABLE tags ADD COLUMN extra INTEGER NOT NULL DEFAULT 1")  # …and its column
    db.commit()
    db.close()

    async def check(path: Path, default: int) -> None:
        store = make_store(StoreSection(path=str(path)))
        await store.open()
        assert await store.schema_version() == 2
        await store.close()
        with sqlite3.connect(path) as conn:
            columns = {r[1]: r[4] for r in conn.execute("PRAGMA table_info(tags)")}
        assert columns["extra"] == str(default)

    asyncio.run(check(old, 1))  # its own column kept
    asyncio.run(check(tmp_path / "new.sqlite3", 7))  # added by the migration


def _node(node_id: str, role: str = "origin", load: float = 0.0) -> NodeRecord:
    return NodeRecord(
        node_id=node_id,
        role=role,
        http_url=f"http://{node_id}:8080",
        rtmp_url=f"rtmp://{node_id}:1935/live",
        srt_url=f"srt://{node_id}:9000" if role == "origin" else "",
        capacity=4.0,
        load=load,
        viewers={"shop": 3} if role == "edge" else {},
        started_at=1000.0,
    )


async def test_nodes_heartbeat_listed_alive_and_removed(store: Store) -> None:
    await store.heartbeat_node(_node("b", load=1.5))
    await store.heartbeat_node(_node("a"))
    await store.heartbeat_node(_node("edge-1", role="edge"))
    await store.heartbeat_node(_node("a", load=2.0))  # a heartbeat refreshes the row
    nodes = await store.list_nodes(node_timeout=5.0)
    assert [(n.node_id, n.role, n.load, n.alive) for n in nodes] == [
        ("a", "origin", 2.0, True),
        ("b", "origin", 1.5, True),
        ("edge-1", "edge", 0.0, True),
    ]
    assert nodes[2].viewers == {"shop": 3} and nodes[0].free == 2.0
    assert nodes[0].http_url == "http://a:8080" and nodes[0].started_at == 1000.0
    await asyncio.sleep(0.3)
    await store.heartbeat_node(_node("b"))
    alive = {n.node_id: n.alive for n in await store.list_nodes(node_timeout=0.25)}
    assert alive == {"a": False, "b": True, "edge-1": False}  # silent past the timeout: dead
    nodes = await store.list_nodes(node_timeout=0.25, edge_timeout=30.0)
    assert [n.alive for n in nodes] == [False, True, True]  # edges report less often
    assert nodes[1].srt_url == "srt://b:9000"
    await store.remove_node("a")
    assert [n.node_id for n in await store.list_nodes(5.0)] == ["b", "edge-1"]
    with pytest.raises(ValueError, match="role"):
        await store.heartbeat_node(_node("c", role="viewer"))
    with pytest.raises(StoreError, match="not an edge"):  # an edge cannot take an origin's id
        await store.heartbeat_node(_node("b", role="edge"))
    assert [n.role for n in await store.list_nodes(5.0)] == ["origin", "edge"]


async def test_lease_owned_by_one_node_with_takeover_raising_the_epoch(store: Store) -> None:
    first = await store.acquire_lease("shop", "a", ttl=5.0, takeover=False)
    assert first is not None and (first.node_id, first.epoch) == ("a", 1)
    assert first.expires_at - first.acquired_at == pytest.approx(5.0)
    assert await store.acquire_lease("shop", "b", ttl=5.0, takeover=False) is None  # reject
    again = await store.acquire_lease("shop", "a", ttl=5.0, takeover=False)
    assert again is not None and again.epoch == 1  # one's own lease: same epoch
    taken = await store.acquire_lease("shop", "b", ttl=5.0, takeover=True)
    assert taken is not None and (taken.node_id, taken.epoch) == ("b", 2)
    assert taken.show_started_at == first.show_started_at  # the same show goes on
    assert await store.lease_of("shop") == taken
    # a renews: fenced out (b holds it at epoch 2); b renews: still its own
    assert await store.renew_leases("a", {"shop": 1}, ttl=5.0) == {"shop"}
    assert await store.renew_leases("b", {"shop": 2}, ttl=5.0) == set()
    await store.release_lease("shop", "a", 1)  # a stale release changes nothing
    assert (await store.lease_of("shop")) is not None
    await store.release_lease("shop", "b", 2)
    assert await store.lease_of("shop") is None
    assert await store.renew_leases("b", {"shop": 2}, ttl=5.0) == {"shop"}  # released: gone
    back = await store.acquire_lease("shop", "b", ttl=5.0, takeover=False)
    assert back is not None and back.epoch == 3  # epochs only grow, even for the same node
    assert back.show_started_at > first.show_started_at  # a new show (no show_gap)
    assert [lease.stream_id for lease in await store.list_leases()] == ["shop"]
    assert await store.renew_leases("a", {}, ttl=5.0) == set()


async def test_expired_lease_is_free_and_renewal_fails(store: Store) -> None:
    a = await store.acquire_lease("shop", "a", ttl=0.2, takeover=False)
    assert a is not None
    await asyncio.sleep(0.3)
    assert await store.lease_of("shop") is None
    assert await store.renew_leases("a", {"shop": a.epoch}, ttl=0.2) == {"shop"}
    b = await store.acquire_lease("shop", "b", ttl=5.0, takeover=False, show_gap=10.0)
    assert b is not None and (b.node_id, b.epoch) == ("b", 2)
    assert b.show_started_at == a.show_started_at  # within show_gap: the same show
    assert await store.acquire_lease("shop", "a", ttl=5.0, takeover=False) is None


async def test_concurrent_acquires_have_one_winner(store_section: StoreSection) -> None:
    """Nodes racing for one stream, each on its own connection: exactly one owns it."""
    nodes = [make_store(store_section) for _ in range(6)]
    for n in nodes:
        await n.open()
    try:
        for round_ in range(5):
            stream = f"race-{round_}"
            won = await asyncio.gather(
                *(n.acquire_lease(stream, f"n{i}", 5.0, False) for i, n in enumerate(nodes))
            )
            winners = [lease for lease in won if lease is not None]
            assert len(winners) == 1 and winners[0].epoch == 1
            assert await nodes[0].lease_of(stream) == winners[0]
            # takeover races: every winner got a distinct, higher epoch; the last one owns it
            taken = await asyncio.gather(
                *(n.acquire_lease(stream, f"t{i}", 5.0, True) for i, n in enumerate(nodes))
            )
            epochs = sorted(lease.epoch for lease in taken if lease is not None)
            assert epochs == list(range(2, 2 + len(nodes)))
            owner = await nodes[0].lease_of(stream)
            assert owner is not None and owner.epoch == epochs[-1]
    finally:
        for n in nodes:
            await n.close()


async def test_unreachable_postgresql_at_open_is_a_clear_error() -> None:
    store = PostgresStore(f"postgresql://shopcast:secret-pw@127.0.0.1:{free_port()}/x")
    with pytest.raises(DatabaseUnavailable) as caught:
        await store.open()
    assert "cannot use PostgreSQL at postgresql://shopcast:***@127.0.0.1" in str(caught.value)
    assert "secret-pw" not in str(caught.value)


async def test_unusable_sqlite_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = make_store(StoreSection(path=str(tmp_path / "file" / "db.sqlite3")))
    with pytest.raises(DatabaseUnavailable, match="cannot open the SQLite store"):
        await store.open()


@requires_postgres
async def test_postgresql_lost_then_back() -> None:
    """Calls fail at once with the reason while the server is away, and work again after."""
    server = PostgresServer()
    server.start()
    try:
        store = make_store(StoreSection(url=server.url()))
        await store.open()
        await store.create_stream("shop")
        server.stop()
        with pytest.raises(DatabaseUnavailable, match="unreachable"):
            await store.get_stream("shop")
        with pytest.raises(DatabaseUnavailable, match="unreachable"):
            await store.set_setting("x", "1")  # no wait for a timeout: the store knows
        server.start()
        async with asyncio.timeout(15):
            while True:
                try:
                    rec = await store.get_stream("shop")
                    break
                except DatabaseUnavailable:
                    await asyncio.sleep(0.1)
        assert rec is not None and rec.id == "shop"
        await store.set_setting("x", "1")
        assert await store.get_setting("x") == "1"
        await store.close()
    finally:
        server.close()
