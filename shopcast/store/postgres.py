"""The shared store: PostgreSQL through an asyncpg pool, for every node of a cluster.

When the database goes away, calls fail at once with :class:`DatabaseUnavailable` (the reason
of the last failure) while one probe reconnects with backoff; the node's live shows go on from
memory meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from ingest.shown import REASON_CHARS, cut
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
    redact_url,
    replay_click,
    role_taken,
    stream_of,
    tag_of,
    tag_values,
)
from shopcast.store.migrations import migrations

log = logging.getLogger(__name__)
T = TypeVar("T")
#: pg_advisory_xact_lock keys: one node at a time migrates / makes the first-start secrets.
MIGRATION_LOCK = 0x73686F7063617301
FIRST_START_LOCK = 0x73686F7063617302
#: Seconds to connect and to run one statement before the database counts as unreachable.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0
#: Reconnect probes: first after this many seconds, doubling up to the maximum.
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 4.0
#: What says "the database is not there" (as opposed to a refused statement).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)
_ACQUIRE_LEASE = ACQUIRE_LEASE_SQL.format(
    stream="$1", node="$2", ttl="$3", takeover="$4::boolean", gap="$5", now="cluster_now()"
)
_HEARTBEAT_NODE = HEARTBEAT_NODE_SQL.format(
    params=", ".join(f"${i}" for i in range(1, 10)), now="cluster_now()"
)
_RECORDING_UPDATES = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in RECORDING_COLUMNS.replace(" ", "").split(",")[1:]
)


def _params(n: int) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1))


class PostgresStore:
    """``[store] url = "postgresql://…"`` (env ``SHOPCAST_STORE_URL``)."""

    backend = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._down: str | None = None  # the reason, while the database is unreachable
        self._probe: asyncio.Task[None] | None = None
        #: Called after the database came back (a node re-registers there).
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []

    @property
    def where(self) -> str:
        return redact_url(self.url)

    # -- life --------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await self._migrate(conn)
        except Exception as exc:  # bad URL, refused, wrong password, no such database…
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise DatabaseUnavailable(
                f"cannot use PostgreSQL at {self.where}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations("postgresql"):
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            log.info("store: migration %04d_%s applied", migration.version, migration.name)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), CONNECT_TIMEOUT)
            except CONNECTION_ERRORS:  # TimeoutError among them
                self._pool.terminate()
            self._pool = None

    # -- faults ------------------------------------------------------------------------
    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if self._pool is None:
            raise DatabaseUnavailable("the store is not open")
        if self._down is not None:
            raise DatabaseUnavailable(self._down)
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                return await fn(conn)
        except CONNECTION_ERRORS as exc:
            self._lost(exc)
            raise DatabaseUnavailable(self._down or str(exc)) from exc

    def _lost(self, exc: BaseException) -> None:
        if self._down is None:
            detail = str(exc) or type(exc).__name__
            self._down = f"PostgreSQL at {self.where} is unreachable: {cut(detail, REASON_CHARS)}"
            log.error("store: %s; reconnecting", self._down)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        assert self._pool is not None
        await self._pool.expire_connections()  # none of the open ones is trusted any more
        delay = BACKOFF_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            assert self._pool is not None
            try:
                async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                    await conn.fetchval("SELECT 1")
            except CONNECTION_ERRORS as exc:
                log.debug("store: still unreachable: %s", exc)
                continue
            log.info("store: PostgreSQL at %s reachable again", self.where)
            self._down = None
            for callback in self.on_reconnect:
                try:
                    await callback()
                except Exception:
                    log.exception("store: reconnect callback failed")
            return

    # -- first start -------------------------------------------------------------------
    async def schema_version(self) -> int:
        return int(
            await self._run(lambda c: c.fetchval("SELECT MAX(version) FROM schema_migrations"))
        )

    async def first_start(self, demo_stream: str | None, make_token: bool) -> FirstStart:
        async def first(conn: asyncpg.Connection) -> FirstStart:
            async with conn.transaction():
                # Two origins starting on one empty database: the second waits here, then
                # finds what the first made.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", FIRST_START_LOCK)
                token = await conn.fetchval(
                    "SELECT value FROM settings WHERE name = $1", API_TOKEN_SETTING
                )
                new_token = None
                if make_token and token is None:
                    token = new_token = new_secret()
                    await _set_setting(conn, API_TOKEN_SETTING, token)
                demo_key = None
                if demo_stream is not None and not await _has_streams(conn):
                    demo_key = (await _insert_stream(conn, demo_stream)).stream_key
            return FirstStart(token, new_token, demo_key)

        return await self._run(first)

    # -- streams -----------------------------------------------------------------------
    async def is_empty(self) -> bool:
        return not await self._run(_has_streams)

    async def create_stream(self, stream_id: str) -> StreamRecord:
        check_stream_id(stream_id)
        try:
            return await self._run(lambda c: _insert_stream(c, stream_id))
        except asyncpg.UniqueViolationError as exc:
            raise StoreError(f"stream {stream_id!r} already exists") from exc

    async def get_stream(self, stream_id: str) -> StreamRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(f"SELECT {STREAM_COLUMNS} FROM streams WHERE id = $1", stream_id)
        )
        return stream_of(row) if row else None

    async def list_streams(self) -> list[StreamRecord]:
        rows = await self._run(
            lambda c: c.fetch(f"SELECT {STREAM_COLUMNS} FROM streams ORDER BY id")
        )
        return [stream_of(r) for r in rows]

    async def set_record(self, stream_id: str, record: bool) -> None:
        await self._run(
            lambda c: c.execute("UPDATE streams SET record = $1 WHERE id = $2", record, stream_id)
        )

    async def delete_stream(self, stream_id: str) -> bool:
        status = await self._run(
            lambda c: c.execute("DELETE FROM streams WHERE id = $1", stream_id)
        )
        return bool(status != "DELETE 0")

    async def rotate_key(self, stream_id: str) -> StreamRecord:
        key = new_secret()
        row = await self._run(
            lambda c: c.fetchrow(
                f"UPDATE streams SET stream_key = $1, key_hash = $2 WHERE id = $3 "
                f"RETURNING {STREAM_COLUMNS}",
                key,
                key_hash(key),
                stream_id,
            )
        )
        if row is None:
            raise StoreError(f"stream {stream_id!r} does not exist")
        return stream_of(row)

    async def stream_for_key(self, key: str) -> StreamRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f"SELECT {STREAM_COLUMNS} FROM streams WHERE key_hash = $1", key_hash(key)
            )
        )
        if row is None:
            return None
        rec = stream_of(row)
        return rec if key_matches(rec.stream_key, key) else None

    # -- named inputs ------------------------------------------------------------------
    async def create_input(self, stream_id: str, name: str, backup: bool) -> InputRecord:
        check_input_name(name)
        key = new_secret()
        rec = InputRecord(stream_id, name, key, backup, time.time())
        try:
            await self._run(
                lambda c: c.execute(
                    "INSERT INTO stream_inputs (stream_id, name, stream_key, key_hash, backup, "
                    "created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    stream_id,
                    name,
                    key,
                    key_hash(key),
                    backup,
                    rec.created_at,
                )
            )
        except asyncpg.UniqueViolationError as exc:
            raise StoreError(f"input {name!r} already exists") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise StoreError(f"stream {stream_id!r} does not exist") from exc
        return rec

    async def list_inputs(self, stream_id: str) -> list[InputRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT {INPUT_COLUMNS} FROM stream_inputs WHERE stream_id = $1 ORDER BY name",
                stream_id,
            )
        )
        return [input_of(r) for r in rows]

    async def delete_input(self, stream_id: str, name: str) -> bool:
        status = await self._run(
            lambda c: c.execute(
                "DELETE FROM stream_inputs WHERE stream_id = $1 AND name = $2", stream_id, name
            )
        )
        return bool(status != "DELETE 0")

    async def input_for_key(self, key: str) -> InputRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f"SELECT {INPUT_COLUMNS} FROM stream_inputs WHERE key_hash = $1", key_hash(key)
            )
        )
        if row is None:
            return None
        rec = input_of(row)
        return rec if key_matches(rec.stream_key, key) else None

    # -- tags --------------------------------------------------------------------------
    async def insert_tag(self, tag: TagRecord) -> None:
        # Committed (synchronous_commit: the WAL is flushed) when execute returns.
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO tags ({TAG_COLUMNS}) VALUES ({_params(13)})", *tag_values(tag)
            )
        )

    async def set_tag_late(self, tag_id: str) -> None:
        await self._run(lambda c: c.execute("UPDATE tags SET late = TRUE WHERE id = $1", tag_id))

    async def list_tags(self, stream_id: str) -> list[TagRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT {TAG_COLUMNS} FROM tags WHERE stream_id = $1 "
                "ORDER BY program_date_time, created_at",
                stream_id,
            )
        )
        return [tag_of(r) for r in rows]

    async def count_click(self, stream_id: str, tag_id: str, source: str = "live") -> int | None:
        replay = replay_click(source)
        clicks = await self._run(
            lambda c: c.fetchval(
                "UPDATE tags SET clicks = clicks + 1, replay_clicks = replay_clicks + $3 "
                "WHERE id = $1 AND stream_id = $2 RETURNING clicks",
                tag_id,
                stream_id,
                replay,
            )
        )
        return None if clicks is None else int(clicks)

    # -- settings ----------------------------------------------------------------------
    async def get_setting(self, name: str) -> str | None:
        value = await self._run(
            lambda c: c.fetchval("SELECT value FROM settings WHERE name = $1", name)
        )
        return None if value is None else str(value)

    async def set_setting(self, name: str, value: str) -> None:
        await self._run(lambda c: _set_setting(c, name, value))

    # -- recordings --------------------------------------------------------------------
    async def save_recording(self, rec: RecordingRecord) -> None:
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO recordings ({RECORDING_COLUMNS}) VALUES ({_params(12)}) "
                f"ON CONFLICT (id) DO UPDATE SET {_RECORDING_UPDATES}",
                *recording_values(rec),
            )
        )

    async def get_recording(self, recording_id: str) -> RecordingRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f"SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1", recording_id
            )
        )
        return recording_of(row) if row else None

    async def list_recordings(
        self, stream_id: str | None = None, state: str | None = None
    ) -> list[RecordingRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT {RECORDING_COLUMNS} FROM recordings "
                "WHERE ($1::text IS NULL OR stream_id = $1) AND ($2::text IS NULL OR state = $2) "
                "ORDER BY started_at",
                stream_id,
                state,
            )
        )
        return [recording_of(r) for r in rows]

    async def recordings_ended_before(self, when: float) -> list[RecordingRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT {RECORDING_COLUMNS} FROM recordings "
                "WHERE ended_at IS NOT NULL AND ended_at < $1 ORDER BY ended_at",
                when,
            )
        )
        return [recording_of(r) for r in rows]

    async def delete_recording(self, recording_id: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM recordings WHERE id = $1", recording_id))

    # -- cluster: nodes and stream leases (the database's clock: cluster_now()) ---------
    async def heartbeat_node(self, node: NodeRecord) -> None:
        values = node_values(node)
        if await self._run(lambda c: c.fetchval(_HEARTBEAT_NODE, *values)) is None:
            raise role_taken(node)

    async def remove_node(self, node_id: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM nodes WHERE node_id = $1", node_id))

    async def list_nodes(
        self, node_timeout: float, edge_timeout: float | None = None
    ) -> list[NodeRecord]:
        rows = await self._run(
            lambda c: c.fetch(f"SELECT {NODE_COLUMNS}, cluster_now() FROM nodes ORDER BY node_id")
        )
        return [node_of(r, r[10], node_timeout, edge_timeout) for r in rows]

    async def acquire_lease(
        self,
        stream_id: str,
        node_id: str,
        ttl: float,
        takeover: bool,
        show_gap: float = 0.0,
    ) -> LeaseRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(_ACQUIRE_LEASE, stream_id, node_id, ttl, takeover, show_gap)
        )
        return lease_of_row(row) if row else None

    async def renew_leases(self, node_id: str, held: dict[str, int], ttl: float) -> set[str]:
        if not held:
            return set()
        rows = await self._run(
            lambda c: c.fetch(
                "UPDATE stream_leases AS l SET expires_at = cluster_now() + $2 "
                "FROM unnest($3::text[], $4::bigint[]) AS h (stream_id, epoch) "
                "WHERE l.stream_id = h.stream_id AND l.epoch = h.epoch AND l.node_id = $1 "
                "AND l.expires_at > cluster_now() RETURNING l.stream_id",
                node_id,
                ttl,
                list(held),
                list(held.values()),
            )
        )
        return set(held) - {r[0] for r in rows}

    async def release_lease(self, stream_id: str, node_id: str, epoch: int) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE stream_leases SET expires_at = cluster_now() WHERE stream_id = $1 "
                "AND node_id = $2 AND epoch = $3 AND expires_at > cluster_now()",
                stream_id,
                node_id,
                epoch,
            )
        )

    async def lease_of(self, stream_id: str) -> LeaseRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f"SELECT {LEASE_COLUMNS} FROM stream_leases "
                "WHERE stream_id = $1 AND expires_at > cluster_now()",
                stream_id,
            )
        )
        return lease_of_row(row) if row else None

    async def list_leases(self) -> list[LeaseRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT {LEASE_COLUMNS} FROM stream_leases "
                "WHERE expires_at > cluster_now() ORDER BY stream_id"
            )
        )
        return [lease_of_row(r) for r in rows]


async def _has_streams(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM streams)"))


async def _insert_stream(conn: asyncpg.Connection, stream_id: str) -> StreamRecord:
    key = new_secret()
    rec = StreamRecord(stream_id, key, time.time())
    await conn.execute(
        "INSERT INTO streams (id, stream_key, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        rec.id,
        key,
        key_hash(key),
        rec.created_at,
    )
    return rec


async def _set_setting(conn: asyncpg.Connection, name: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO settings (name, value) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        name,
        value,
    )
