"""The store's interface and records, shared by the SQLite and PostgreSQL backends."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.shown import REASON_CHARS, cut

STREAM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: Where a buy click came from: the live shop page or the replay page of a recording.
CLICK_SOURCES = ("live", "replay")
#: The setting holding the generated API token (when ``[api] tokens`` is empty).
API_TOKEN_SETTING = "api_token"


class StoreError(Exception):
    """A store operation was refused (duplicate id, invalid id, unknown stream)."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached or refused the operation; the message says why."""

    status, code = 503, "database_unavailable"  # as the API and the WHIP data channel say it


@dataclass(frozen=True)
class StreamRecord:
    id: str
    stream_key: str
    created_at: float
    record: bool = True  # shows are recorded (``[record] enabled`` must be on too)


@dataclass(frozen=True)
class InputRecord:
    """A named input of a stream (its "main" input is the stream's own key, with no record)."""

    stream_id: str
    name: str
    stream_key: str
    backup: bool
    created_at: float


#: The input a stream's own key publishes to.
MAIN_INPUT = "main"
#: Input names: like stream ids, at most 32 characters.
INPUT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


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
    #: The node that recorded it (with the file store its media are on that node's disk only).
    node_id: str = ""


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


@dataclass(frozen=True)
class NodeRecord:
    """A node of the cluster as it last heartbeat; times are the database's clock."""

    node_id: str
    role: str  # "origin" or "edge"
    http_url: str
    rtmp_url: str
    capacity: float  # transcoding slots
    load: float  # slots in use: live shows weighted by their transcoding cost
    viewers: dict[str, int]  # edges: distinct viewers per stream id
    started_at: float
    heartbeat_at: float = 0.0  # set by the store
    alive: bool = True  # computed against node_timeout when read
    srt_url: str = ""  # "srt://host:port", empty when the node takes no SRT

    @property
    def free(self) -> float:
        """Free transcoding slots (placement picks the origin with the most)."""
        return self.capacity - self.load


@dataclass(frozen=True)
class LeaseRecord:
    """Who owns a live stream: ``epoch`` is the fencing token, strictly increasing per stream."""

    stream_id: str
    node_id: str
    epoch: int
    acquired_at: float
    expires_at: float
    show_started_at: float  # when the current show began (kept across owners)


@dataclass(frozen=True)
class FirstStart:
    """What :meth:`Store.first_start` found or made; ``new_*`` only when made by this call."""

    api_token: str | None
    new_api_token: str | None
    new_demo_key: str | None


class Store(Protocol):
    """Streams, hashed keys, settings, tags and recordings; every method awaits the database.

    Any method may raise :class:`DatabaseUnavailable` (the database is down or unreachable).
    """

    #: "sqlite" or "postgresql"
    backend: str

    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def first_start(self, demo_stream: str | None, make_token: bool) -> FirstStart:
        """Once per database: the demo stream when there is no stream, the API token when
        ``make_token`` and none is stored — atomic across every node sharing the database."""

    async def is_empty(self) -> bool: ...

    async def create_stream(self, stream_id: str) -> StreamRecord:
        """Create a stream with a fresh key; ``StoreError`` if the id is invalid or taken."""

    async def get_stream(self, stream_id: str) -> StreamRecord | None: ...

    async def list_streams(self) -> list[StreamRecord]: ...

    async def set_record(self, stream_id: str, record: bool) -> None: ...

    async def delete_stream(self, stream_id: str) -> bool: ...

    async def rotate_key(self, stream_id: str) -> StreamRecord:
        """Give the stream a new key; the old one stops working at once."""

    async def stream_for_key(self, key: str) -> StreamRecord | None:
        """The stream this publish key belongs to, or ``None`` (see :func:`key_matches`)."""

    async def create_input(self, stream_id: str, name: str, backup: bool) -> InputRecord:
        """A new named input with a fresh key; ``StoreError`` when the name is taken or
        invalid, or the stream does not exist."""

    async def list_inputs(self, stream_id: str) -> list[InputRecord]:
        """The stream's named inputs, by name."""

    async def delete_input(self, stream_id: str, name: str) -> bool:
        """False when there is no such input."""

    async def input_for_key(self, key: str) -> InputRecord | None:
        """The named input this publish key belongs to, or ``None``."""

    async def insert_tag(self, tag: TagRecord) -> None:
        """Durably record a tag: committed to disk when this returns."""

    async def set_tag_late(self, tag_id: str) -> None: ...

    async def list_tags(self, stream_id: str) -> list[TagRecord]: ...

    async def count_click(self, stream_id: str, tag_id: str, source: str = "live") -> int | None:
        """Count a buy-button click on a tag from ``source`` (one of ``CLICK_SOURCES``, else
        ``ValueError``); its total, or ``None`` if the tag is unknown."""

    async def get_setting(self, name: str) -> str | None: ...

    async def set_setting(self, name: str, value: str) -> None: ...

    async def save_recording(self, rec: RecordingRecord) -> None:
        """Insert or update a recording's row."""

    async def get_recording(self, recording_id: str) -> RecordingRecord | None: ...

    async def list_recordings(
        self, stream_id: str | None = None, state: str | None = None
    ) -> list[RecordingRecord]: ...

    async def recordings_ended_before(self, when: float) -> list[RecordingRecord]: ...

    async def delete_recording(self, recording_id: str) -> None: ...

    async def heartbeat_node(self, node: NodeRecord) -> None:
        """Insert or refresh ``node``'s row; ``heartbeat_at`` becomes the database's now.
        ``StoreError`` when the id belongs to a node of another role."""

    async def remove_node(self, node_id: str) -> None:
        """Forget a node that stopped cleanly (its leases are released separately)."""

    async def list_nodes(
        self, node_timeout: float, edge_timeout: float | None = None
    ) -> list[NodeRecord]:
        """Every node, by id; ``alive`` when it heartbeat within ``node_timeout`` seconds
        (edges: ``edge_timeout`` when given; they report less often)."""

    async def acquire_lease(
        self,
        stream_id: str,
        node_id: str,
        ttl: float,
        takeover: bool,
        show_gap: float = 0.0,
    ) -> LeaseRecord | None:
        """Own ``stream_id`` for ``ttl`` seconds; ``None`` when another node's lease is live
        and ``takeover`` is false. Re-acquiring one's own live lease keeps its epoch, anything
        else takes epoch + 1. ``show_started_at`` is kept when the previous lease is live or
        ended at most ``show_gap`` seconds ago (the same show continues), else it is now."""

    async def renew_leases(self, node_id: str, held: dict[str, int], ttl: float) -> set[str]:
        """Extend every live lease of ``held`` (stream id → epoch) this node still holds; the
        ids it no longer holds (taken at a higher epoch, or expired) are returned."""

    async def release_lease(self, stream_id: str, node_id: str, epoch: int) -> None:
        """End the lease now if this node still holds it at ``epoch`` (else nothing)."""

    async def lease_of(self, stream_id: str) -> LeaseRecord | None:
        """The stream's live lease, or ``None`` (never leased, released or expired)."""

    async def list_leases(self) -> list[LeaseRecord]:
        """Every live lease, by stream id."""


#: Column orders both backends select and insert in (the row helpers below read by position).
STREAM_COLUMNS = "id, stream_key, created_at, record"
RECORDING_COLUMNS = (
    "id, stream_id, state, store, started_at, ended_at, duration, bytes, renditions, "
    "error, degraded, node_id"
)
TAG_COLUMNS = (
    "id, stream_id, kind, product_id, data, duration, pts, program_date_time, source, late, "
    "clicks, created_at, replay_clicks"
)


#: ``heartbeat_at`` last: the store's clock fills it.
NODE_COLUMNS = (
    "node_id, role, http_url, rtmp_url, srt_url, capacity, load, viewers, started_at, heartbeat_at"
)
LEASE_COLUMNS = "stream_id, node_id, epoch, acquired_at, expires_at, show_started_at"
NODE_ROLES = ("origin", "edge")
#: A node's heartbeat; a node keeps its role (an edge report cannot overwrite an origin's row).
#: Slots: {params} (the row but heartbeat_at) and {now}.
HEARTBEAT_NODE_SQL = f"""
INSERT INTO nodes ({NODE_COLUMNS}) VALUES ({{params}}, {{now}})
ON CONFLICT (node_id) DO UPDATE SET {
    ", ".join(f"{c} = excluded.{c}" for c in NODE_COLUMNS.replace(" ", "").split(",")[2:])
}
WHERE nodes.role = excluded.role
RETURNING node_id
"""
#: Take or refresh a lease in one statement, so two nodes racing cannot both win: the row lock
#: of ON CONFLICT serializes them and the second sees the first's live lease. Slots:
#: {stream} {node} {ttl} {takeover} {gap} and {now}, the store's clock.
ACQUIRE_LEASE_SQL = f"""
INSERT INTO stream_leases AS l ({LEASE_COLUMNS})
VALUES ({{stream}}, {{node}}, 1, {{now}}, {{now}} + {{ttl}}, {{now}})
ON CONFLICT (stream_id) DO UPDATE SET
    epoch = CASE WHEN l.node_id = excluded.node_id AND l.expires_at > {{now}}
                 THEN l.epoch ELSE l.epoch + 1 END,
    acquired_at = CASE WHEN l.node_id = excluded.node_id AND l.expires_at > {{now}}
                       THEN l.acquired_at ELSE excluded.acquired_at END,
    show_started_at = CASE WHEN l.expires_at + {{gap}} > {{now}}
                           THEN l.show_started_at ELSE excluded.show_started_at END,
    node_id = excluded.node_id,
    expires_at = excluded.expires_at
WHERE l.node_id = excluded.node_id OR l.expires_at <= {{now}} OR {{takeover}}
RETURNING {LEASE_COLUMNS}
"""


def node_values(node: NodeRecord) -> tuple[Any, ...]:
    """``node``'s row in ``NODE_COLUMNS`` order, without ``heartbeat_at`` (the store's now)."""
    if node.role not in NODE_ROLES:
        raise ValueError(f"unknown node role {node.role!r}")
    viewers = json.dumps(node.viewers, separators=(",", ":"), sort_keys=True)
    return (
        node.node_id,
        node.role,
        node.http_url,
        node.rtmp_url,
        node.srt_url,
        node.capacity,
        node.load,
        viewers,
        node.started_at,
    )


def role_taken(node: NodeRecord) -> StoreError:
    return StoreError(
        f"node id {node.node_id[:128]!r} belongs to a node that is not an {node.role}"
    )


def node_of(row: Any, now: float, node_timeout: float, edge_timeout: float | None) -> NodeRecord:
    timeout = edge_timeout if edge_timeout is not None and row[1] == "edge" else node_timeout
    return NodeRecord(
        node_id=row[0],
        role=row[1],
        http_url=row[2],
        rtmp_url=row[3],
        srt_url=row[4],
        capacity=float(row[5]),
        load=float(row[6]),
        viewers={str(k): int(v) for k, v in json.loads(row[7]).items()},
        started_at=float(row[8]),
        heartbeat_at=float(row[9]),
        alive=float(row[9]) > now - timeout,
    )


def lease_of_row(row: Any) -> LeaseRecord:
    return LeaseRecord(
        stream_id=row[0],
        node_id=row[1],
        epoch=int(row[2]),
        acquired_at=float(row[3]),
        expires_at=float(row[4]),
        show_started_at=float(row[5]),
    )


def stream_of(row: Any) -> StreamRecord:
    return StreamRecord(row[0], row[1], float(row[2]), bool(row[3]))


INPUT_COLUMNS = "stream_id, name, stream_key, backup, created_at"


def input_of(row: Any) -> InputRecord:
    return InputRecord(row[0], row[1], row[2], bool(row[3]), float(row[4]))


def check_input_name(name: str) -> None:
    if not INPUT_NAME_RE.match(name) or name in (MAIN_INPUT, "slate"):
        raise StoreError(
            "input name must be 1-32 characters of a-z, 0-9, '-' and '_', starting with a "
            "letter or digit, and not 'main' or 'slate'"
        )


def recording_of(row: Any) -> RecordingRecord:
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
        node_id=row[11],
    )


def tag_of(row: Any) -> TagRecord:
    return TagRecord(
        id=row[0],
        stream_id=row[1],
        kind=row[2],
        product_id=row[3],
        data=json.loads(row[4]),
        duration=row[5],
        pts=int(row[6]),
        program_date_time=row[7],
        source=row[8],
        late=bool(row[9]),
        clicks=int(row[10]),
        created_at=row[11],
        replay_clicks=int(row[12]),
    )


def recording_values(rec: RecordingRecord) -> tuple[Any, ...]:
    return (
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
        rec.node_id,
    )


def tag_values(tag: TagRecord) -> tuple[Any, ...]:
    return (
        tag.id,
        tag.stream_id,
        tag.kind,
        tag.product_id,
        tag_data_json(tag.data),
        tag.duration,
        tag.pts,
        tag.program_date_time,
        tag.source,
        tag.late,
        tag.clicks,
        tag.created_at,
        tag.replay_clicks,
    )


def new_secret() -> str:
    """A 192-bit random URL-safe secret (stream keys, API tokens)."""
    return secrets.token_urlsafe(24)


def key_hash(key: str) -> bytes:
    """What the key index holds: the key's SHA-256 (the index never sees the key itself)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_matches(stored: str, presented: str) -> bool:
    """Confirm a row found by hash in constant time."""
    return hmac.compare_digest(stored.encode(), presented.encode("utf-8", "surrogatepass"))


def check_stream_id(stream_id: str) -> None:
    if not STREAM_ID_RE.match(stream_id):
        raise StoreError(
            "stream id must be 1-64 characters of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )


def replay_click(source: str) -> int:
    """1 for a click from the replay page, 0 from the live one; ``ValueError`` for others."""
    if source not in CLICK_SOURCES:
        raise ValueError(f"unknown click source {source!r}")
    return int(source == "replay")


def tag_data_json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def redact_url(url: str) -> str:
    """A database URL fit for logs and errors: no password, bounded length."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user = userinfo.partition(":")[0]
        url = f"{scheme}://{user}:***@{host}" if ":" in userinfo else url
    return cut(url, REASON_CHARS)
