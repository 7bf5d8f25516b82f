"""Recordings on the server side: the store migration, rows, retention sweep, config."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from packager.stores import open_store
from packager.stores.local import FileStore
from shopcast.config import ConfigError, RecordSection, StoreSection, load_config
from shopcast.hooks import Webhooks
from shopcast.recordings import Recordings
from shopcast.store import RecordingRecord, make_store


def _sqlite(path: Path | str) -> Any:
    return make_store(StoreSection(path=str(path)))


async def test_old_store_files_gain_the_record_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE streams (id TEXT PRIMARY KEY, stream_key TEXT NOT NULL, "
        "key_hash BLOB NOT NULL UNIQUE, created_at REAL NOT NULL)"
    )
    db.execute("INSERT INTO streams VALUES ('shop', 'k', x'00', 1.0)")
    db.commit()
    db.close()
    store = _sqlite(path)
    await store.open()
    rec = await store.get_stream("shop")
    assert rec is not None and rec.record is True
    await store.set_record("shop", False)
    assert (await store.get_stream("shop")).record is False
    await store.close()
    store = _sqlite(path)
    await store.open()
    assert (await store.get_stream("shop")).record is False
    await store.close()


def _row(rid: str, ended_at: float | None, state: str = "ready") -> RecordingRecord:
    return RecordingRecord(rid, "shop", state, "file", 0.0, ended_at, 10.0, 5, ["180p"], None, None)


async def test_retention_sweep_deletes_old_recordings(tmp_path: Path) -> None:
    now = 100 * 86400.0
    store = _sqlite(":memory:")
    await store.open()
    media = FileStore(tmp_path)
    section = RecordSection(path=str(tmp_path), retention_days=7)
    recordings = Recordings(section, store, media, Webhooks((), ""), lambda r: r, clock=lambda: now)
    old, young, live = "o" * 22, "y" * 22, "l" * 22
    for rid, ended in ((old, now - 8 * 86400), (young, now - 6 * 86400), (live, None)):
        await store.save_recording(_row(rid, ended, "ready" if ended else "recording"))
        await media.put(f"{rid}/180p/1.m4s", b"x", "video/iso.segment")
    assert await recordings.sweep() == 1
    assert await store.get_recording(old) is None and not (tmp_path / old).exists()
    assert await store.get_recording(young) is not None and (tmp_path / young).exists()
    assert await store.get_recording(live) is not None


def test_record_config(tmp_path: Path) -> None:
    cfg = load_config("shopcast.toml", env={})
    assert cfg.record.enabled and cfg.record.store == "file"
    assert cfg.record.path == "var/recordings"
    assert isinstance(open_store(cfg.record), FileStore)
    env = {"SHOPCAST_RECORD_ENABLED": "false", "SHOPCAST_RECORD_RETENTION_DAYS": "30"}
    cfg = load_config("shopcast.toml", env=env)
    assert not cfg.record.enabled and cfg.record.retention_days == 30
    with pytest.raises(ConfigError, match=r"record\.store"):
        load_config(None, env={"SHOPCAST_RECORD_STORE": "tape"})
