"""Stream ownership: a lease in the store taken when a publisher is admitted, renewed with every
heartbeat, released when the show ends here; the epoch fences out a node that lost it.

A node is sure of a lease only until ``ttl`` after the last renewal it *sent* that succeeded
(the store's expiry is later still); past that it stops claiming it (:meth:`holds` is False)
though its show plays on from memory. When the store answers again and the lease is gone to
another node, the local publisher is dropped and the show stops here; when nobody took it,
it is taken again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shopcast.store import DatabaseUnavailable, LeaseRecord, Store

log = logging.getLogger(__name__)


@dataclass
class HeldLease:
    epoch: int
    #: Local monotonic time until which the lease is surely ours (renewal sent + ttl).
    sure_until: float
    #: Local monotonic time it was taken (an admitted publisher may not have a session yet).
    taken_at: float
    unsure_logged: bool = False
    #: The lease as the store gave it (its show's start: ``shopcast.failover``).
    record: LeaseRecord | None = None


class StreamLeases:
    """The leases this node holds; ``admit`` is the publish-admission check."""

    def __init__(
        self,
        store: Store,
        ttl: float,
        *,
        on_duplicate: str,
        show_gap: float,
        shows_here: Callable[[str], bool],
        on_lost: Callable[[str, str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.takeover = on_duplicate == "takeover"
        self.show_gap = show_gap
        self.shows_here = shows_here
        self.on_lost = on_lost
        self.clock = clock
        self.node_id = ""  # known once the node registered
        self.held: dict[str, HeldLease] = {}

    def holds(self, stream_id: str) -> bool:
        """Whether this node may act as the stream's owner now."""
        held = self.held.get(stream_id)
        return held is not None and self.clock() <= held.sure_until

    async def admit(self, stream_id: str, publisher: Any = None) -> str | None:
        """Take the stream's lease for a publisher arriving here: ``None`` when taken, else
        why not (another live node publishes it and ``on_duplicate_publisher = "reject"``)."""
        sent = self.clock()
        lease = await self.store.acquire_lease(
            stream_id, self.node_id, self.ttl, self.takeover, self.show_gap
        )
        if lease is None:
            owner = await self.store.lease_of(stream_id)
            where = f"node {owner.node_id}" if owner is not None else "another node"
            return f"stream {stream_id} is already being published on {where}"
        self._hold(lease, sent)
        return None

    def _hold(self, lease: LeaseRecord, sent: float) -> None:
        before = self.held.get(lease.stream_id)
        if before is None or before.epoch != lease.epoch:
            log.info(
                "[%s] lease taken by node %s (epoch %d)", lease.stream_id, self.node_id, lease.epoch
            )
        self.held[lease.stream_id] = HeldLease(lease.epoch, sent + self.ttl, sent, record=lease)

    def lease(self, stream_id: str) -> LeaseRecord | None:
        """The stream's lease as this node took it (``None`` when it holds none)."""
        held = self.held.get(stream_id)
        return held.record if held is not None else None

    async def renew(self) -> None:
        """Extend every held lease (called with each heartbeat); act on those lost; release
        those whose show is over here."""
        if not self.held:
            return
        sent = self.clock()
        epochs = {stream_id: held.epoch for stream_id, held in self.held.items()}
        try:
            lost = await self.store.renew_leases(self.node_id, epochs, self.ttl)
            for stream_id in lost:
                await self._lost(stream_id, epochs[stream_id])
        except DatabaseUnavailable as exc:
            self._unsure(exc)
            return
        for stream_id, epoch in epochs.items():
            held = self.held.get(stream_id)
            if held is not None and held.epoch == epoch and stream_id not in lost:
                held.sure_until, held.unsure_logged = sent + self.ttl, False
        for stream_id, held in list(self.held.items()):
            if not self.shows_here(stream_id) and sent - held.taken_at > self.ttl:
                await self.release(stream_id)

    def _unsure(self, exc: Exception) -> None:
        now = self.clock()
        for stream_id, held in self.held.items():
            if now > held.sure_until and not held.unsure_logged:
                held.unsure_logged = True
                log.warning(
                    "[%s] lease not renewed for over %g s: no longer claimed (the show plays "
                    "on here until the store says who owns it): %s",
                    stream_id,
                    self.ttl,
                    exc,
                )

    async def _lost(self, stream_id: str, epoch: int) -> None:
        """The renewal of ``epoch`` failed: the lease expired, or another node took it."""
        held = self.held.get(stream_id)
        if held is None or held.epoch != epoch:
            return  # released or taken again meanwhile
        sent = self.clock()
        owner = await self.store.lease_of(stream_id)
        if owner is None and self.shows_here(stream_id):
            # Expired while nobody else took it (the store was away, or this node paused):
            # the publisher is still here, so the stream is ours again at a new epoch.
            owner = await self.store.acquire_lease(
                stream_id, self.node_id, self.ttl, False, self.show_gap
            )
            if owner is None:
                owner = await self.store.lease_of(stream_id)
        if owner is not None and owner.node_id == self.node_id:
            self._hold(owner, sent)
            return
        del self.held[stream_id]
        if owner is None:
            return  # expired and no show here any more: nothing to give up
        reason = f"lease for {stream_id} lost to node {owner.node_id} (epoch {owner.epoch})"
        log.warning("[%s] %s", stream_id, reason)
        await self.on_lost(stream_id, reason)

    async def release(self, stream_id: str) -> None:
        """Give the stream's lease up (its show is over here)."""
        held = self.held.pop(stream_id, None)
        if held is None:
            return
        try:
            await self.store.release_lease(stream_id, self.node_id, held.epoch)
        except DatabaseUnavailable as exc:  # it expires by itself
            log.warning("[%s] lease not released: %s", stream_id, exc)
            return
        log.info("[%s] lease released by node %s (epoch %d)", stream_id, self.node_id, held.epoch)

    async def release_all(self) -> None:
        for stream_id in list(self.held):
            await self.release(stream_id)
