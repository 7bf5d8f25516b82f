"""The store: streams, hashed keys, settings, tags, recordings — SQLite or PostgreSQL.

``[store] path`` (SQLite, the default, one machine) or ``[store] url = "postgresql://…"`` (env
``SHOPCAST_STORE_URL``, shared by every node of a cluster). Both apply the versioned schema
migrations of ``migrations/`` when opened.
"""

from __future__ import annotations

from typing import Protocol

from shopcast.store.base import (
    API_TOKEN_SETTING,
    CLICK_SOURCES,
    STREAM_ID_RE,
    DatabaseUnavailable,
    FirstStart,
    LeaseRecord,
    NodeRecord,
    RecordingRecord,
    Store,
    StoreError,
    StreamRecord,
    TagRecord,
    new_secret,
)

__all__ = [
    "API_TOKEN_SETTING",
    "CLICK_SOURCES",
    "STREAM_ID_RE",
    "DatabaseUnavailable",
    "FirstStart",
    "LeaseRecord",
    "NodeRecord",
    "RecordingRecord",
    "Store",
    "StoreError",
    "StreamRecord",
    "TagRecord",
    "make_store",
    "new_secret",
]


class StoreSettings(Protocol):
    """What :func:`make_store` reads (``shopcast.config.StoreSection`` has these fields)."""

    @property
    def path(self) -> str: ...

    @property
    def url(self) -> str: ...


def make_store(settings: StoreSettings) -> Store:
    """The configured store, not opened yet (``await store.open()`` connects and migrates)."""
    if settings.url:
        # Imported here: asyncpg loads only when PostgreSQL is configured.
        from shopcast.store.postgres import PostgresStore

        return PostgresStore(settings.url)
    from shopcast.store.sqlite import SqliteStore

    return SqliteStore(settings.path)
