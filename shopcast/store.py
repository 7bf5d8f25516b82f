"""Embedded SQLite store: streams, their publish keys, and server settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STREAM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: Where a buy click came from: the live shop page or the replay page of a recording.
CLICK_SOURCES = ("live", "replay")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    stream_key TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT,
    data TEXT NOT NULL,
    duration REAL,
    pts INTEGER NOT NULL,
    program_date_time REAL NOT NULL,
    source TEXT NOT NULL,
    late INTEGER NOT NULL DEFAULT 0,
    clicks INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    replay_clicks INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tags_by_stream ON tags (stream_id, program_date_time);
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    state TEXT NOT NULL,
    store TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration REAL NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    renditions TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    degraded TEXT
);
CREATE INDEX IF NOT EXISTS recordings_by_stream ON recordings (stream_id, started_at);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(Exception):
    """A store operation was refused (duplicate id, invalid id, unknown stream)."""


@dataclass(frozen=True)
class StreamRecord:
    id: str
    stream_key: str
    created_at: float
    record: bool = True  # shows are recorded (``[record] enabled`` must be on too)


@dataclass(frozen=True)
class RecordingRecord:
    """A recording as stored: its state and totals (the media are in the recordings store)."""

    id: str
    stream_id: str
    state: str  # "recording", "ready" or "failed"
    store: str  # "file" or "s3"
    started_at: float
    ended_at: float | None
    duration: float
    bytes: int
    renditions: list[str]
    error: str | None
    degraded: str | None


@dataclass(frozen=True)
class TagRecord:
    """A product tag as stored; ``pts`` is the source timestamp (ms) of the stamped frame."""

    id: str
    stream_id: str
    kind: str
    product_id: str | None
    data: dict[str, Any]
    duration: float | None
    pts: int
    program_date_time: float
    source: str  # "api" or "cue" (an RTMP data message from the publisher)
    late: bool
    clicks: int  # every buy click, live and replay
    created_at: float
    replay_clicks: int = 0  # the part of ``clicks`` made on the replay page

    @property
    def clicks_by_source(self) -> dict[str, int]:
        """Buy clicks per page they came from (``CLICK_SOURCES``)."""
        return {"live": self.clicks - self.replay_clicks, "replay": self.replay_clicks}


_STREAM_COLUMNS = "id, stream_key, created_at, record"
_RECORDING_COLUMNS = (
    "id, stream_id, state, store, started_at, ended_at, duration, bytes, renditions, "
    "error, degraded"
)


def _stream(row: tuple[Any, ...]) -> StreamRecord:
    return StreamRecord(row[0], row[1], row[2], bool(row[3]))


def _recording(row: tuple[Any, ...]) -> RecordingRecord:
    return RecordingRecord(
        id=row[0],
        stream_id=row[1],
        state=row[2],
        store=row[3],
        started_at=row[4],
        ended_at=row[5],
        duration=row[6],
        bytes=row[7],
        renditions=json.loads(row[8]),
        error=row[9],
        degraded=row[10],
    )


def new_secret() -> str:
    """A 192-bit random URL-safe secret (stream keys, API tokens)."""
    return secrets.token_urlsafe(24)


def _key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Store:
    """Thin synchronous wrapper; every call is one short indexed query, safe on the event loop."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after a store file may have been created."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(streams)")}
        if "record" not in columns:
            self._db.execute("ALTER TABLE streams ADD COLUMN record INTEGER NOT NULL DEFAULT 1")
        tag_columns = {r[1] for r in self._db.execute("PRAGMA table_info(tags)")}
        if "replay_clicks" not in tag_columns:
            # Every click counted before the replay page existed came from the live page.
            self._db.execute("ALTER TABLE tags ADD COLUMN replay_clicks INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def is_empty(self) -> bool:
        return self._db.execute("SELECT 1 FROM streams LIMIT 1").fetchone() is None

    def create_stream(self, stream_id: str) -> StreamRecord:
        """Create a stream with a fresh key; ``StoreError`` if the id is invalid or taken."""
        if not STREAM_ID_RE.match(stream_id):
            raise StoreError(
                "stream id must be 1-64 characters of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit"
            )
        key = new_secret()
        rec = StreamRecord(stream_id, key, time.time())
        try:
            self._db.execute(
                "INSERT INTO streams (id, stream_key, key_hash, created_at) VALUES (?, ?, ?, ?)",
                (rec.id, key, _key_hash(key), rec.created_at),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"stream {stream_id!r} already exists") from exc
        return rec

    def get_stream(self, stream_id: str) -> StreamRecord | None:
        row = self._db.execute(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE id = ?", (stream_id,)
        ).fetchone()
        return _stream(row) if row else None

    def list_streams(self) -> list[StreamRecord]:
        rows = self._db.execute(f"SELECT {_STREAM_COLUMNS} FROM streams ORDER BY id")
        return [_stream(r) for r in rows]

    def set_record(self, stream_id: str, record: bool) -> None:
        self._db.execute("UPDATE streams SET record = ? WHERE id = ?", (int(record), stream_id))

    def delete_stream(self, stream_id: str) -> bool:
        return self._db.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount > 0

    def rotate_key(self, stream_id: str) -> StreamRecord:
        """Give the stream a new key; the old one stops working at once."""
        key = new_secret()
        cur = self._db.execute(
            "UPDATE streams SET stream_key = ?, key_hash = ? WHERE id = ?",
            (key, _key_hash(key), stream_id),
        )
        if cur.rowcount == 0:
            raise StoreError(f"stream {stream_id!r} does not exist")
        rec = self.get_stream(stream_id)
        assert rec is not None
        return rec

    def stream_for_key(self, key: str) -> StreamRecord | None:
        """The stream this publish key belongs to, or ``None``.

        Looked up by the key's SHA-256 (the index never sees the key itself), then confirmed
        with a constant-time comparison.
        """
        row = self._db.execute(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE key_hash = ?", (_key_hash(key),)
        ).fetchone()
        if row is None:
            return None
        rec = _stream(row)
        if not hmac.compare_digest(rec.stream_key.encode(), key.encode("utf-8", "surrogatepass")):
            return None
        return rec

    def insert_tag(self, tag: TagRecord) -> None:
        """Durably record a tag (synchronous=FULL: on disk when this returns)."""
        self._db.execute(
            "INSERT INTO tags (id, stream_id, kind, product_id, data, duration, pts, "
            "program_date_time, source, late, clicks, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tag.id,
                tag.stream_id,
                tag.kind,
                tag.product_id,
                json.dumps(tag.data, separators=(",", ":"), ensure_ascii=False),
                tag.duration,
                tag.pts,
                tag.program_date_time,
                tag.source,
                int(tag.late),
                tag.clicks,
                tag.created_at,
            ),
        )

    def set_tag_late(self, tag_id: str) -> None:
        self._db.execute("UPDATE tags SET late = 1 WHERE id = ?", (tag_id,))

    def list_tags(self, stream_id: str) -> list[TagRecord]:
        rows = self._db.execute(
            "SELECT id, stream_id, kind, product_id, data, duration, pts, program_date_time, "
            "source, late, clicks, created_at, replay_clicks FROM tags WHERE stream_id = ? "
            "ORDER BY program_date_time, created_at",
            (stream_id,),
        )
        return [
            TagRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                json.loads(r[4]),
                r[5],
                r[6],
                r[7],
                r[8],
                bool(r[9]),
                r[10],
                r[11],
                r[12],
            )
            for r in rows
        ]

    def count_click(self, stream_id: str, tag_id: str, source: str = "live") -> int | None:
        """Count a buy-button click on a tag from ``source`` (one of ``CLICK_SOURCES``); the
        tag's click total, or ``None`` if the tag is unknown."""
        if source not in CLICK_SOURCES:
            raise ValueError(f"unknown click source {source!r}")
        cur = self._db.execute(
            "UPDATE tags SET clicks = clicks + 1, replay_clicks = replay_clicks + ? "
            "WHERE id = ? AND stream_id = ?",
            (int(source == "replay"), tag_id, stream_id),
        )
        if cur.rowcount == 0:
            return None
        row = self._db.execute("SELECT clicks FROM tags WHERE id = ?", (tag_id,)).fetchone()
        return int(row[0])

    def get_setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_setting(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def save_recording(self, rec: RecordingRecord) -> None:
        """Insert or update a recording's row."""
        self._db.execute(
            f"INSERT OR REPLACE INTO recordings ({_RECORDING_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.id,
                rec.stream_id,
                rec.state,
                rec.store,
                rec.started_at,
                rec.ended_at,
                rec.duration,
                rec.bytes,
                json.dumps(rec.renditions),
                rec.error,
                rec.degraded,
            ),
        )

    def get_recording(self, recording_id: str) -> RecordingRecord | None:
        row = self._db.execute(
            f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
        ).fetchone()
        return _recording(row) if row else None

    def list_recordings(
        self, stream_id: str | None = None, state: str | None = None
    ) -> list[RecordingRecord]:
        query = f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE 1 = 1"
        args: list[Any] = []
        if stream_id is not None:
            query += " AND stream_id = ?"
            args.append(stream_id)
        if state is not None:
            query += " AND state = ?"
            args.append(state)
        rows = self._db.execute(query + " ORDER BY started_at", args)
        return [_recording(r) for r in rows]

    def recordings_ended_before(self, when: float) -> list[RecordingRecord]:
        rows = self._db.execute(
            f"SELECT {_RECORDING_COLUMNS} FROM recordings "
            "WHERE ended_at IS NOT NULL AND ended_at < ? ORDER BY ended_at",
            (when,),
        )
        return [_recording(r) for r in rows]

    def delete_recording(self, recording_id: str) -> None:
        self._db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
