import sqlite3

import pytest

from shopcast.store import Store, StoreError, TagRecord


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3")
    yield s
    s.close()


def test_keys_are_long_random_and_unique(store: Store) -> None:
    a = store.create_stream("a")
    b = store.create_stream("b")
    assert a.stream_key != b.stream_key
    assert len(a.stream_key) >= 32  # 24 random bytes, base64url: 192 bits


def test_key_lookup_and_rotation(store: Store) -> None:
    rec = store.create_stream("shoe-launch")
    assert store.stream_for_key(rec.stream_key).id == "shoe-launch"
    assert store.stream_for_key(rec.stream_key + "x") is None
    assert store.stream_for_key("") is None
    new = store.rotate_key("shoe-launch")
    assert new.stream_key != rec.stream_key
    assert store.stream_for_key(rec.stream_key) is None  # old key dead at once
    assert store.stream_for_key(new.stream_key).id == "shoe-launch"


@pytest.mark.parametrize("bad", ["", "UPPER", "a/b", "..", "-lead", "x" * 65, "a b"])
def test_invalid_ids_refused(store: Store, bad: str) -> None:
    with pytest.raises(StoreError):
        store.create_stream(bad)


def test_duplicate_id_refused(store: Store) -> None:
    store.create_stream("demo")
    with pytest.raises(StoreError, match="already exists"):
        store.create_stream("demo")


def test_persists_across_reopen(tmp_path) -> None:
    s = Store(tmp_path / "db.sqlite3")
    rec = s.create_stream("demo")
    s.set_setting("api_token", "tok")
    s.close()
    s2 = Store(tmp_path / "db.sqlite3")
    assert s2.stream_for_key(rec.stream_key).id == "demo"
    assert s2.get_setting("api_token") == "tok"
    assert not s2.is_empty()
    s2.close()


def _tag(tag_id: str) -> TagRecord:
    return TagRecord(
        id=tag_id,
        stream_id="demo",
        kind="product",
        product_id="sku",
        data={},
        duration=None,
        pts=0,
        program_date_time=0.0,
        source="api",
        late=False,
        clicks=0,
        created_at=0.0,
    )


def test_clicks_counted_by_source(store: Store) -> None:
    store.create_stream("demo")
    store.insert_tag(_tag("t1"))
    assert store.count_click("demo", "t1") == 1  # the live page (the default)
    assert store.count_click("demo", "t1", "replay") == 2
    assert store.count_click("demo", "t1", "replay") == 3
    assert store.count_click("other", "t1", "replay") is None
    with pytest.raises(ValueError):
        store.count_click("demo", "t1", "vod")
    (tag,) = store.list_tags("demo")
    assert (tag.clicks, tag.clicks_by_source) == (3, {"live": 1, "replay": 2})


def test_store_file_without_replay_clicks_is_migrated(tmp_path) -> None:
    """A store file from before replay clicks existed: opened, its tags keep their clicks
    (all of them live ones) and count replay clicks from then on."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE tags (id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "product_id TEXT, data TEXT NOT NULL, duration REAL, pts INTEGER NOT NULL, "
        "program_date_time REAL NOT NULL, source TEXT NOT NULL, "
        "late INTEGER NOT NULL DEFAULT 0, clicks INTEGER NOT NULL DEFAULT 0, "
        "created_at REAL NOT NULL);"
        "INSERT INTO tags VALUES ('t1', 'demo', 'product', 'sku', '{}', NULL, 0, 0, 'api', "
        "0, 5, 0);"
    )
    db.commit()
    db.close()
    store = Store(path)
    try:
        (tag,) = store.list_tags("demo")
        assert tag.clicks_by_source == {"live": 5, "replay": 0}
        assert store.count_click("demo", "t1", "replay") == 6
        (tag,) = store.list_tags("demo")
        assert tag.clicks_by_source == {"live": 5, "replay": 1}
    finally:
        store.close()
    Store(path).close()  # opening a migrated file again changes nothing
