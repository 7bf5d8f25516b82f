"""Where a live stream is served in a cluster, for this origin's redirects (``/hls``) and its
API's forwarding: here while this origin holds the stream's lease, else at the owner's
advertised URL (remembered at most a second; the API asks afresh). Likewise a recording made
with the file store: on the node that recorded it."""

from __future__ import annotations

import logging

from cdn_edge.routing import StreamRoutes
from packager.stores import StoreUnavailable
from shopcast.cluster.leases import StreamLeases
from shopcast.cluster.registry import NodeRegistry
from shopcast.recordings import Recordings
from shopcast.store import DatabaseUnavailable

#: Recordings stores every node reads alike (the others, "file", are one node's disk).
SHARED_STORES = frozenset({"s3"})

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


class RecordingRoutes:
    """:class:`packager.origin.RecordingHomes`: a file-store recording is served by the node
    whose row it carries; a shared store's (S3) by any node."""

    def __init__(self, registry: NodeRegistry, recordings: Recordings) -> None:
        self.registry, self.recordings = registry, recordings
        # node id → its advertised URL, looked up at most once a second per node.
        self.nodes = StreamRoutes(self._node_url)

    async def home_url(self, recording_id: str) -> str | None:
        row = await self.recordings.get(recording_id)
        here = self.registry.record
        if row is None or row.store in SHARED_STORES or here is None:
            return None
        if row.node_id in ("", here.node_id):  # "": recorded before nodes were written down
            return None
        if await self.recordings.recorder.manifest(recording_id) is not None:
            # Its files are here all the same: this node restarted under another id (the
            # default id has the HTTP port in it), or the nodes share a disk.
            return None
        try:
            base = await self.nodes.owner(row.node_id)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(f"node {row.node_id} holding it is not known: {exc}") from exc
        if base is None:
            raise StoreUnavailable(
                f"recording {recording_id} is in the {row.store} store of node {row.node_id}, "
                "which is not alive"
            )
        return base

    async def _node_url(self, node_id: str) -> str | None:
        for node in await self.registry.nodes():
            if node.node_id == node_id and node.role == "origin" and node.alive and node.http_url:
                return node.http_url.rstrip("/")
        return None
