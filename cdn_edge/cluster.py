"""``shopcast edge --cluster postgresql://…``: the edge reads stream owners and the live origins
from the cluster store and heartbeats itself into it (role ``edge``, viewers per stream)."""

from __future__ import annotations

import logging
import time

from shopcast.store import DatabaseUnavailable, make_store
from shopcast.store.base import NodeRecord

log = logging.getLogger("shopcast.edge.cluster")


class _Url:
    """What :func:`make_store` reads: the PostgreSQL URL, no SQLite path."""

    path = ""

    def __init__(self, url: str) -> None:
        self.url = url


class EdgeDirectory:
    """Life cycle: ``open()`` → ``owner()`` / ``origins()`` / ``heartbeat()`` → ``close()``."""

    def __init__(self, url: str, node_id: str, http_url: str, node_timeout: float) -> None:
        self.store = make_store(_Url(url))
        self.node_id, self.http_url = node_id, http_url
        self.node_timeout = node_timeout
        self.started_at = time.time()
        #: node id → advertised HTTP URL of the live origins, as of the last listing.
        self._origins: dict[str, str] = {}
        self._listed = 0.0

    async def open(self) -> None:
        """Connect (``DatabaseUnavailable`` with the reason when the database cannot be used)."""
        await self.store.open()

    async def close(self) -> None:
        """Leave the cluster (a clean stop is not a dead node), then disconnect."""
        try:
            await self.store.remove_node(self.node_id)
        except DatabaseUnavailable as exc:  # the row times out on its own
            log.warning("cluster: %s not removed: %s", self.node_id, exc)
        await self.store.close()

    async def owner(self, stream_id: str) -> str | None:
        """Base URL of the live origin holding the stream's lease (None: no live owner, or the
        database is away — then any origin is asked, and redirects to the owner)."""
        try:
            lease = await self.store.lease_of(stream_id)
            if lease is None:
                return None
            if lease.node_id not in self._origins or time.monotonic() - self._listed > 1.0:
                await self.origins()
        except DatabaseUnavailable as exc:
            log.warning("owner of %s not known: %s", stream_id, exc)
            return None
        return self._origins.get(lease.node_id)

    async def origins(self) -> list[str]:
        """HTTP URLs of the origins alive now (for what is not a live stream: replays, pages)."""
        nodes = await self.store.list_nodes(self.node_timeout)
        self._origins = {
            n.node_id: n.http_url.rstrip("/")
            for n in nodes
            if n.role == "origin" and n.alive and n.http_url
        }
        self._listed = time.monotonic()
        return sorted(self._origins.values())

    async def beat(self, viewers: dict[str, int]) -> list[str]:
        """Heartbeat, then the live origins (empty while the database is away)."""
        try:
            await self.heartbeat(viewers)
            return await self.origins()
        except DatabaseUnavailable as exc:  # serve on with the origins known; retried next beat
            log.warning("cluster heartbeat failed: %s", exc)
            return []

    async def heartbeat(self, viewers: dict[str, int]) -> None:
        """This edge's row: alive while it heartbeats, with its distinct viewers per stream."""
        await self.store.heartbeat_node(
            NodeRecord(
                node_id=self.node_id,
                role="edge",
                http_url=self.http_url,
                rtmp_url="",
                capacity=0.0,
                load=0.0,
                viewers=viewers,
                started_at=self.started_at,
            )
        )
