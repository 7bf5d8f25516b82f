"""The embedded store: SQLite in one worker thread, so the event loop never waits on the disk."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from shopcast.store.base import (
    ACQUIRE_LEASE_SQL,
    API_TOKEN_SETTING,
    HEARTBEAT_NODE_SQL,
    INPUT_COLUMNS,
    LEASE_COLUMNS,
    NODE_COLUMNS,
    RECORDING_COLUMNS,
    STREAM_COLUMNS,
    TAG_COLUMNS,
    DatabaseUnavailable,
    FirstStart,
    InputRecord,
    LeaseRecord,
    NodeRecord,
    RecordingRecord,
    StoreError,
    StreamRecord,
    TagRecord,
    check_input_name,
    check_stream_id,
    input_of,
    key_hash,
    key_matches,
    lease_of_row,
    new_secret,
    node_of,
    node_values,
    recording_of,
    recording_values,
    replay_click,
    role_taken,
    stream_of,
    tag_of,
    tag_values,
)
from shopcast.store.migrations import migrations

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Columns that files from before versioned migrations may lack (CREATE TABLE IF NOT EXISTS
#: in migration 1 keeps their tables as they were).
_PRE_VERSIONING_COLUMNS = (("streams", "record", "INTEGER NOT NULL DEFAULT 1"),)
_ADD_COLUMN_RE = re.compile(r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)\s", re.IGNORECASE)
_HEARTBEAT_NODE = HEARTBEAT_NODE_SQL.format(params=", ".join("?" * 9), now="?")
_ACQUIRE_LEASE = ACQUIRE_LEASE_SQL.format(
    stream="?1", node="?2", ttl="?3", takeover="?4", gap="?5", now="?6"
)


class SqliteStore:
    """``[store] path``: one file, WAL, ``synchronous=FULL`` (a tag is on disk when stored)."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        # One thread owns the connection: calls are serialized, the loop never blocks on them.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise DatabaseUnavailable("the store is not open")
            try:
                return fn(self._db)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(f"SQLite {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._worker, call)

    # -- life --------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._open)

    def _open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")  # other processes on the same file
            self._migrate(db)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            # A file from before versioned migrations: it may already hold columns that later
            # migrations add (the code of its time added them on open).
            unversioned = not done and _has_table(db, "streams")
            for migration in migrations("sqlite"):
                if migration.version in done:
                    continue
                # Statement by statement: executescript() would commit our transaction.
                for statement in _statements(migration.sql):
                    if not (unversioned and _adds_existing_column(db, statement)):
                        db.execute(statement)
                if migration.version == 1:
                    _add_missing_columns(db)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
                log.info("store: migration %04d_%s applied", migration.version, migration.name)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        def close(db: sqlite3.Connection) -> None:
            db.close()

        if self._db is not None:
            await self._run(close)
            self._db = None
        self._worker.shutdown(wait=False)

    async def schema_version(self) -> int:
        return await self._run(
            lambda db: int(db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])
        )

    async def first_start(self, demo_stream: str | None, make_token: bool) -> FirstStart:
        def first(db: sqlite3.Connection) -> FirstStart:
            db.execute("BEGIN IMMEDIATE")  # every process on this file: one at a time
            try:
                token = _get_setting(db, API_TOKEN_SETTING)
                new_token = None
                if make_token and token is None:
                    token = new_token = new_secret()
                    _set_setting(db, API_TOKEN_SETTING, token)
                demo_key = None
                empty = db.execute("SELECT 1 FROM streams LIMIT 1").fetchone() is None
                if demo_stream is not None and empty:
                    demo_key = _insert_stream(db, demo_stream).stream_key
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return FirstStart(token, new_token, demo_key)

        return await self._run(first)

    # -- streams -----------------------------------------------------------------------
    async def is_empty(self) -> bool:
        return await self._run(
            lambda db: db.execute("SELECT 1 FROM streams LIMIT 1").fetchone() is None
        )

    async def create_stream(self, stream_id: str) -> StreamRecord:
        check_stream_id(stream_id)
        try:
            return await self._run(lambda db: _insert_stream(db, stream_id))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"stream {stream_id!r} already exists") from exc

    async def get_stream(self, stream_id: str) -> StreamRecord | None:
        def get(db: sqlite3.Connection) -> StreamRecord | None:
            row = db.execute(
                f"SELECT {STREAM_COLUMNS} FROM streams WHERE id = ?", (stream_id,)
            ).fetchone()
            return stream_of(row) if row else None

        return await self._run(get)

    async def list_streams(self) -> list[StreamRecord]:
        return await self._run(
            lambda db: [
                stream_of(r)
                for r in db.execute(f"SELECT {STREAM_COLUMNS} FROM streams ORDER BY id")
            ]
        )

    async def set_record(self, stream_id: str, record: bool) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE streams SET record = ? WHERE id = ?", (int(record), stream_id)
            )
        )

    async def delete_stream(self, stream_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            # SQLite does not enforce the inputs' foreign key (no PRAGMA foreign_keys).
            db.execute("DELETE FROM stream_inputs WHERE stream_id = ?", (stream_id,))
            return db.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount > 0

        return await self._run(delete)

    async def rotate_key(self, stream_id: str) -> StreamRecord:
        key = new_secret()

        def rotate(db: sqlite3.Connection) -> StreamRecord | None:
            db.execute(
                "UPDATE streams SET stream_key = ?, key_hash = ? WHERE id = ?",
                (key, key_hash(key), stream_id),
            )
            row = db.execute(
                f"SELECT {STREAM_COLUMNS} FROM streams WHERE id = ?", (stream_id,)
            ).fetchone()
            return stream_of(row) if row else None

        rec = await self._run(rotate)
        if rec is None:
            raise StoreError(f"stream {stream_id!r} does not exist")
        return rec

    async def stream_for_key(self, key: str) -> StreamRecord | None:
        def find(db: sqlite3.Connection) -> Any:
            return db.execute(
                f"SELECT {STREAM_COLUMNS} FROM streams WHERE key_hash = ?", (key_hash(key),)
            ).fetchone()

        row = await self._run(find)
        if row is None:
            return None
        rec = stream_of(row)
        return rec if key_matches(rec.stream_key, key) else None

    # -- named inputs ------------------------------------------------------------------
    async def create_input(self, stream_id: str, name: str, backup: bool) -> InputRecord:
        check_input_name(name)
        key = new_secret()
        rec = InputRecord(stream_id, name, key, backup, time.time())

        def insert(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM streams WHERE id = ?", (stream_id,)).fetchone() is None:
                return False
            db.execute(
                "INSERT INTO stream_inputs (stream_id, name, stream_key, key_hash, backup, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (stream_id, name, key, key_hash(key), int(backup), rec.created_at),
            )
            return True

        try:
            if not await self._run(insert):
                raise StoreError(f"stream {stream_id!r} does not exist")
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"input {name!r} already exists") from exc
        return rec

    async def list_inputs(self, stream_id: str) -> list[InputRecord]:
        return await self._run(
            lambda db: [
                input_of(r)
                for r in db.execute(
                    f"SELECT {INPUT_COLUMNS} FROM stream_inputs WHERE stream_id = ? ORDER BY name",
                    (stream_id,),
                )
            ]
        )

    async def delete_input(self, stream_id: str, name: str) -> bool:
        return await self._run(
            lambda db: (
                db.execute(
                    "DELETE FROM stream_inputs WHERE stream_id = ? AND name = ?", (stream_id, name)
                ).rowcount
                > 0
            )
        )

    async def input_for_key(self, key: str) -> InputRecord | None:
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {INPUT_COLUMNS} FROM stream_inputs WHERE key_hash = ?", (key_hash(key),)
            ).fetchone()
        )
        if row is None:
            return None
        rec = input_of(row)
        return rec if key_matches(rec.stream_key, key) else None

    # -- tags --------------------------------------------------------------------------
    async def insert_tag(self, tag: TagRecord) -> None:
        await self._run(
            lambda db: db.execute(
                f"INSERT INTO tags ({TAG_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                tag_values(tag),
            )
        )

    async def set_tag_late(self, tag_id: str) -> None:
        await self._run(lambda db: db.execute("UPDATE tags SET late = 1 WHERE id = ?", (tag_id,)))

    async def list_tags(self, stream_id: str) -> list[TagRecord]:
        return await self._run(
            lambda db: [
                tag_of(r)
                for r in db.execute(
                    f"SELECT {TAG_COLUMNS} FROM tags WHERE stream_id = ? "
                    "ORDER BY program_date_time, created_at",
                    (stream_id,),
                )
            ]
        )

    async def count_click(self, stream_id: str, tag_id: str, source: str = "live") -> int | None:
        replay = replay_click(source)

        def count(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "UPDATE tags SET clicks = clicks + 1, replay_clicks = replay_clicks + ? "
                "WHERE id = ? AND stream_id = ? RETURNING clicks",
                (replay, tag_id, stream_id),
            ).fetchone()
            return int(row[0]) if row else None

        return await self._run(count)

    # -- settings ----------------------------------------------------------------------
    async def get_setting(self, name: str) -> str | None:
        return await self._run(lambda db: _get_setting(db, name))

    async def set_setting(self, name: str, value: str) -> None:
        await self._run(lambda db: _set_setting(db, name, value))

    # -- recordings --------------------------------------------------------------------
    async def save_recording(self, rec: RecordingRecord) -> None:
        await self._run(
            lambda db: db.execute(
                f"INSERT OR REPLACE INTO recordings ({RECORDING_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                recording_values(rec),
            )
        )

    async def get_recording(self, recording_id: str) -> RecordingRecord | None:
        def get(db: sqlite3.Connection) -> RecordingRecord | None:
            row = db.execute(
                f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
            return recording_of(row) if row else None

        return await self._run(get)

    async def list_recordings(
        self, stream_id: str | None = None, state: str | None = None
    ) -> list[RecordingRecord]:
        query = f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE 1 = 1"
        args: list[Any] = []
        if stream_id is not None:
            query += " AND stream_id = ?"
            args.append(stream_id)
        if state is not None:
            query += " AND state = ?"
            args.append(state)
        return await self._run(
            lambda db: [recording_of(r) for r in db.execute(query + " ORDER BY started_at", args)]
        )

    async def recordings_ended_before(self, when: float) -> list[RecordingRecord]:
        return await self._run(
            lambda db: [
                recording_of(r)
                for r in db.execute(
                    f"SELECT {RECORDING_COLUMNS} FROM recordings "
                    "WHERE ended_at IS NOT NULL AND ended_at < ? ORDER BY ended_at",
                    (when,),
                )
            ]
        )

    async def delete_recording(self, recording_id: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
        )

    # -- cluster: nodes and stream leases (every node on this file shares this clock) ----
    async def heartbeat_node(self, node: NodeRecord) -> None:
        values = node_values(node)
        rows = await self._run(
            lambda db: db.execute(_HEARTBEAT_NODE, (*values, time.time())).fetchall()
        )
        if not rows:
            raise role_taken(node)

    async def remove_node(self, node_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)))

    async def list_nodes(
        self, node_timeout: float, edge_timeout: float | None = None
    ) -> list[NodeRecord]:
        def nodes(db: sqlite3.Connection) -> list[NodeRecord]:
            now = time.time()
            rows = db.execute(f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id")
            return [node_of(r, now, node_timeout, edge_timeout) for r in rows]

        return await self._run(nodes)

    async def acquire_lease(
        self,
        stream_id: str,
        node_id: str,
        ttl: float,
        takeover: bool,
        show_gap: float = 0.0,
    ) -> LeaseRecord | None:
        def acquire(db: sqlite3.Connection) -> LeaseRecord | None:
            args = (stream_id, node_id, ttl, int(takeover), show_gap, time.time())
            # fetchall: the statement (and its write) is finished before the call returns.
            rows = db.execute(_ACQUIRE_LEASE, args).fetchall()
            return lease_of_row(rows[0]) if rows else None

        return await self._run(acquire)

    async def renew_leases(self, node_id: str, held: dict[str, int], ttl: float) -> set[str]:
        def renew(db: sqlite3.Connection) -> set[str]:
            now = time.time()
            lost = set()
            db.execute("BEGIN IMMEDIATE")
            try:
                for stream_id, epoch in held.items():
                    renewed = db.execute(
                        "UPDATE stream_leases SET expires_at = ? WHERE stream_id = ? "
                        "AND node_id = ? AND epoch = ? AND expires_at > ?",
                        (now + ttl, stream_id, node_id, epoch, now),
                    ).rowcount
                    if not renewed:
                        lost.add(stream_id)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return lost

        return await self._run(renew) if held else set()

    async def release_lease(self, stream_id: str, node_id: str, epoch: int) -> None:
        def release(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                "UPDATE stream_leases SET expires_at = ? WHERE stream_id = ? AND node_id = ? "
                "AND epoch = ? AND expires_at > ?",
                (now, stream_id, node_id, epoch, now),
            )

        await self._run(release)

    async def lease_of(self, stream_id: str) -> LeaseRecord | None:
        def lease(db: sqlite3.Connection) -> LeaseRecord | None:
            row = db.execute(
                f"SELECT {LEASE_COLUMNS} FROM stream_leases WHERE stream_id = ? AND expires_at > ?",
                (stream_id, time.time()),
            ).fetchone()
            return lease_of_row(row) if row else None

        return await self._run(lease)

    async def list_leases(self) -> list[LeaseRecord]:
        def leases(db: sqlite3.Connection) -> list[LeaseRecord]:
            rows = db.execute(
                f"SELECT {LEASE_COLUMNS} FROM stream_leases WHERE expires_at > ? "
                "ORDER BY stream_id",
                (time.time(),),
            )
            return [lease_of_row(r) for r in rows]

        return await self._run(leases)


def _statements(script: str) -> list[str]:
    """A migration script's statements (``;`` ends one; none of ours hold ``;`` in a literal)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _has_table(db: sqlite3.Connection, table: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return found.fetchone() is not None


def _adds_existing_column(db: sqlite3.Connection, statement: str) -> bool:
    match = _ADD_COLUMN_RE.match(statement)
    if match is None:
        return False
    columns = {r[1] for r in db.execute(f"PRAGMA table_info({match[1]})")}
    return match[2] in columns


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, decl in _PRE_VERSIONING_COLUMNS:
        columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _insert_stream(db: sqlite3.Connection, stream_id: str) -> StreamRecord:
    key = new_secret()
    rec = StreamRecord(stream_id, key, time.time())
    db.execute(
        "INSERT INTO streams (id, stream_key, key_hash, created_at) VALUES (?, ?, ?, ?)",
        (rec.id, key, key_hash(key), rec.created_at),
    )
    return rec


def _get_setting(db: sqlite3.Connection, name: str) -> str | None:
    row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def _set_setting(db: sqlite3.Connection, name: str, value: str) -> None:
    db.execute(
        "INSERT INTO settings (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )
