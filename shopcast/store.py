"""Embedded SQLite store: streams, their publish keys, and server settings."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

STREAM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    stream_key TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
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
            "SELECT id, stream_key, created_at FROM streams WHERE id = ?", (stream_id,)
        ).fetchone()
        return StreamRecord(*row) if row else None

    def list_streams(self) -> list[StreamRecord]:
        rows = self._db.execute("SELECT id, stream_key, created_at FROM streams ORDER BY id")
        return [StreamRecord(*r) for r in rows]

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
            "SELECT id, stream_key, created_at FROM streams WHERE key_hash = ?", (_key_hash(key),)
        ).fetchone()
        if row is None:
            return None
        rec = StreamRecord(*row)
        if not hmac.compare_digest(rec.stream_key.encode(), key.encode("utf-8", "surrogatepass")):
            return None
        return rec

    def get_setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_setting(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
