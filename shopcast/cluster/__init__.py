"""The cluster: every origin and edge on one store (PostgreSQL, or SQLite for a cluster of one).

:class:`NodeRegistry` heartbeats this node into the store's node table and reads who is there
(``owner_of``, ``placement``); :class:`StreamLeases` makes one origin own each live stream.
"""

from __future__ import annotations

from shopcast.cluster.leases import StreamLeases
from shopcast.cluster.registry import (
    EDGE_TIMEOUT,
    ClusterView,
    NodeRegistry,
    node_identity,
    show_cost,
)

__all__ = [
    "EDGE_TIMEOUT",
    "ClusterView",
    "NodeRegistry",
    "StreamLeases",
    "node_identity",
    "show_cost",
]
