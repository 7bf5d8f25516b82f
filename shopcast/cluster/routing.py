"""Where a live stream is served in a cluster, for this origin's redirects (``/hls``) and its
API's forwarding: here while this origin holds the stream's lease, else at the owner's
advertised URL (remembered at most a second; the API asks afresh)."""

from __future__ import annotations

import logging

from cdn_edge.routing import StreamRoutes
from shopcast.cluster.leases import StreamLeases
from shopcast.cluster.registry import NodeRegistry
from shopcast.store import DatabaseUnavailable

log = logging.getLogger(__name__)


class OwnerRoutes:
    """:class:`packager.origin.StreamOwners` over this node's leases and the node table."""

    def __init__(self, registry: NodeRegistry, leases: StreamLeases) -> None:
        self.registry, self.leases = registry, leases
        # The edge's remembered-owner table: one store query per stream per second at most.
        self.routes = StreamRoutes(self._other_owner)

    def holds(self, stream_id: str) -> bool:
        return self.leases.holds(stream_id)

    async def owner_url(self, stream_id: str, max_age: float = 1.0) -> str | None:
        return await self.routes.owner(stream_id, max_age)

    async def _other_owner(self, stream_id: str) -> str | None:
        if self.registry.record is None:
            return None  # not registered yet: no cluster to route to
        try:
            node = await self.registry.owner_of(stream_id)
        except DatabaseUnavailable as exc:  # answered here, as on one machine
            log.warning("owner of %s not known: %s", stream_id, exc)
            return None
        if node is None or node.node_id == self.registry.node_id or not node.http_url:
            return None
        return node.http_url.rstrip("/")
