import pytest

from shopcast.store import Store, StoreError


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
