"""Where recordings live: one interface, a local directory and an S3-compatible object store.

Keys are relative paths chosen by the recorder, never by user input:
``<recording_id>/<rendition>/init.mp4``, ``<recording_id>/<rendition>/<msn>.m4s``,
``<recording_id>/manifest.json``, ``clips/<clip_id>.mp4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from ingest.shown import shown

#: Keys are made by the recorder: up to four ``/``-separated names of ``[A-Za-z0-9_.-]``, none
#: starting with a dot (stores keep temp files hidden) and no ``..``: a key never leaves a root.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}){0,3}")


#: What a store writes under a key: bytes, or a file's bytes as buffers in order (a segment's
#: parts, written one after another and never joined in memory).
Blob = bytes | tuple[bytes, ...]


def blob_size(data: Blob) -> int:
    """How many bytes ``data`` writes."""
    return len(data) if isinstance(data, bytes) else sum(map(len, data))


def check_key(key: str) -> str:
    """``key`` if it is a store key the recorder could have made, else ``ValueError``."""
    if not _KEY.fullmatch(key) or ".." in key:
        raise ValueError(f"invalid store key {shown(key)}")
    return key


class StoreUnavailable(Exception):
    """The store cannot take or give data right now (disk full, S3 unreachable); says why."""


@dataclass(frozen=True)
class StoreHealth:
    """What an operator sees of a store: pending uploads, failures and the last reason."""

    pending: int = 0
    failed: int = 0
    last_error: str | None = None


class RecordingStore(Protocol):
    """Bytes by key; ``put`` returns once the bytes are safe locally (S3: spooled first)."""

    name: str  # "file" or "s3": shown on every recording

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Flush what is pending (bounded wait), then release connections."""

    async def put(self, key: str, data: Blob, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""

    async def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (local and uploaded), sorted."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; how many were removed."""

    def health(self) -> StoreHealth: ...


class StoreSettings(Protocol):
    """What :func:`open_store` reads (``shopcast.config.RecordSection`` has these fields)."""

    @property
    def store(self) -> str:
        """``"file"`` or ``"s3"``."""

    @property
    def path(self) -> str:
        """The file store's directory; the S3 store's local spool."""

    @property
    def queue_size(self) -> int: ...

    @property
    def s3_endpoint(self) -> str: ...

    @property
    def s3_bucket(self) -> str: ...

    @property
    def s3_region(self) -> str: ...

    @property
    def s3_access_key(self) -> str: ...

    @property
    def s3_secret_key(self) -> str: ...

    @property
    def s3_prefix(self) -> str: ...

    @property
    def s3_spool_files(self) -> int:
        """How many files the S3 store's spool holds at most."""


def open_store(settings: StoreSettings) -> RecordingStore:
    """The configured store (not started yet): ``FileStore(path)`` or
    ``S3Store.from_settings(settings)``."""
    if settings.store == "s3":
        from packager.stores.s3 import S3Store  # lazily: its client library loads only for S3

        s3: RecordingStore = S3Store.from_settings(settings)
        return s3
    if settings.store != "file":
        raise ValueError(f"unknown recordings store {settings.store!r} (file or s3)")
    from packager.stores.local import FileStore

    return FileStore(settings.path)
