"""This node in the cluster's node table: registered at start, heartbeat every third of
``[cluster] node_timeout``, removed at a clean stop; and what the table says about the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from shopcast.config import ClusterSection
from shopcast.store import DatabaseUnavailable, LeaseRecord, NodeRecord, Store

log = logging.getLogger(__name__)
#: Edges report viewers every 5 s by default (cdn_edge ``report_interval``): one counts this
#: long after its last report, as the single-machine viewer count always did.
EDGE_TIMEOUT = 30.0
#: After a failed heartbeat: retry after this many seconds, doubling up to the interval.
RETRY_FIRST = 0.25
#: What a live show weighs in transcoding slots: a transcoded one a whole slot, one whose
#: every rendition is the source passed through (or audio) this much.
PASSTHROUGH_COST = 0.25


def node_identity(
    settings: ClusterSection, public_host: str, http_port: int, rtmp_port: int, rtmp_app: str
) -> tuple[str, str, str]:
    """(node_id, http_url, rtmp_url) from ``[cluster]``, defaulted from the listening ports."""
    node_id = settings.node_id or f"{socket.gethostname()}-{http_port}"
    http_url = settings.http_url or f"http://{public_host}:{http_port}"
    rtmp_url = settings.rtmp_url or f"rtmp://{public_host}:{rtmp_port}/{rtmp_app}"
    return node_id, http_url.rstrip("/"), rtmp_url.rstrip("/")


@dataclass(frozen=True)
class ClusterView:
    """One read of the node and lease tables (a status answer's cluster facts)."""

    nodes: list[NodeRecord]
    leases: dict[str, LeaseRecord]

    def origin(self, stream_id: str) -> NodeRecord | None:
        """The node owning the stream's live lease (``None``: nobody publishes it)."""
        lease = self.leases.get(stream_id)
        if lease is None:
            return None
        found = next((n for n in self.nodes if n.node_id == lease.node_id), None)
        # A live lease is renewed with the heartbeat: its node row is there unless it was
        # just removed; the id is still the owner.
        return found or NodeRecord(lease.node_id, "origin", "", "", 0.0, 0.0, {}, 0.0)

    def viewers(self, stream_id: str) -> int:
        """Distinct viewers of the stream summed over every live edge."""
        return sum(n.viewers.get(stream_id, 0) for n in self.nodes if n.role == "edge" and n.alive)


class NodeRegistry:
    """start → run → close: heartbeats this origin (capacity, load) into the store."""

    def __init__(
        self,
        store: Store,
        settings: ClusterSection,
        load: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.node_timeout = settings.node_timeout
        self.interval = settings.node_timeout / 3
        self.load = load
        self.record: NodeRecord | None = None  # known from start()
        #: Awaited after every heartbeat attempt (the stream leases renew there).
        self.on_heartbeat: list[Callable[[], Awaitable[None]]] = []
        self._registered = False
        self._wake = asyncio.Event()

    @property
    def node_id(self) -> str:
        assert self.record is not None, "the registry is not started"
        return self.record.node_id

    async def start(self, node_id: str, http_url: str, rtmp_url: str, srt_url: str = "") -> None:
        """Register this node (``DatabaseUnavailable`` if the store cannot be reached)."""
        self.record = NodeRecord(
            node_id=node_id,
            role="origin",
            http_url=http_url,
            rtmp_url=rtmp_url,
            srt_url=srt_url,
            capacity=self.settings.capacity,
            load=0.0,
            viewers={},
            started_at=time.time(),
        )
        await self.store.heartbeat_node(self.record)
        self._registered = True
        # PostgreSQL tells when it is back: re-register then, not at the next retry.
        callbacks = getattr(self.store, "on_reconnect", None)
        if isinstance(callbacks, list):
            callbacks.append(self._reconnected)
        log.info(
            "cluster: node %s registered (%s, capacity %g, node_timeout %g s)",
            node_id,
            http_url,
            self.settings.capacity,
            self.node_timeout,
        )

    async def _reconnected(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Heartbeat until cancelled; after a failure, retry with backoff and re-register."""
        failures = 0
        while True:
            delay = self.interval
            if failures:
                delay = min(RETRY_FIRST * 2 ** (failures - 1), self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            failures = 0 if await self.heartbeat() else min(failures + 1, 16)
            for callback in self.on_heartbeat:
                try:
                    await callback()
                except Exception:
                    log.exception("cluster: heartbeat listener failed")

    async def heartbeat(self) -> bool:
        """One heartbeat with the current load; False (logged once) when the store is away."""
        assert self.record is not None
        self.record = replace(self.record, load=round(self.load(), 3))
        try:
            await self.store.heartbeat_node(self.record)
        except DatabaseUnavailable as exc:
            if self._registered:
                log.warning("cluster: heartbeat of node %s failed: %s", self.node_id, exc)
            self._registered = False
            return False
        if not self._registered:
            log.info("cluster: node %s re-registered", self.node_id)
            self._registered = True
        return True

    async def close(self) -> None:
        """Leave the node table (a clean stop; a crash leaves a row that turns dead)."""
        if self.record is None:
            return
        try:
            await self.store.remove_node(self.node_id)
        except DatabaseUnavailable as exc:
            log.warning("cluster: node %s not removed: %s", self.node_id, exc)

    # -- what the table says ------------------------------------------------------------
    async def nodes(self) -> list[NodeRecord]:
        """Every node; origins alive within node_timeout, edges within ``EDGE_TIMEOUT``."""
        return await self.store.list_nodes(self.node_timeout, EDGE_TIMEOUT)

    async def view(self) -> ClusterView:
        nodes = await self.nodes()
        leases = await self.store.list_leases()
        return ClusterView(nodes, {lease.stream_id: lease for lease in leases})

    async def owner_of(self, stream_id: str) -> NodeRecord | None:
        """The origin that owns the stream now (``None``: no live lease)."""
        lease = await self.store.lease_of(stream_id)
        if lease is None:
            return None
        return ClusterView(await self.nodes(), {stream_id: lease}).origin(stream_id)

    async def placement(self) -> NodeRecord | None:
        """The live origin with the most free capacity (ties: this node, then by id)."""
        origins = [n for n in await self.nodes() if n.role == "origin" and n.alive]
        if not origins:
            return None
        me = self.record.node_id if self.record is not None else ""
        return min(origins, key=lambda n: (-n.free, n.node_id != me, n.node_id))


def show_cost(renditions: list[tuple[bool, bool]]) -> float:
    """A live show's weight in slots from its renditions' (is video, passed through)."""
    if not renditions:
        return 1.0  # the ladder is not known yet: count the worst
    transcoded = any(video and not passthrough for video, passthrough in renditions)
    return 1.0 if transcoded else PASSTHROUGH_COST
