"""The edge's Prometheus metrics, in a registry of its own (served at the edge's /metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cdn_edge.routing import StreamRoutes


class RequestCounts(Collector):
    """Per-request counters as plain ints, exported when scraped.

    A ``prometheus_client.Counter`` takes a lock on every ``inc``; at tens of thousands of
    requests a second on one event-loop thread that lock was a measurable share of a request.
    """

    _HELP: ClassVar[dict[str, tuple[str, str]]] = {
        "hits": ("shopcast_edge_cache_hits", "Requests served from cache"),
        "misses": ("shopcast_edge_cache_misses", "Requests that started an upstream fetch"),
        "collapsed": (
            "shopcast_edge_collapsed",
            "Requests that joined an upstream fetch already in flight",
        ),
        "bytes_out": ("shopcast_edge_bytes_out", "Response body bytes sent to viewers"),
    }

    def __init__(self) -> None:
        self.hits = self.misses = self.collapsed = self.bytes_out = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        for attr, (name, help_text) in self._HELP.items():
            yield CounterMetricFamily(name, help_text, value=getattr(self, attr))


class RouteCounts(Collector):
    """How the edge found live streams' owners (:class:`cdn_edge.routing.StreamRoutes`)."""

    def __init__(self) -> None:
        self.routes: StreamRoutes | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self.routes is None:
            return
        yield CounterMetricFamily(
            "shopcast_edge_owner_lookups",
            "Owner lookups in the cluster store (one per stream per second at most)",
            value=self.routes.lookups,
        )
        moves = CounterMetricFamily(
            "shopcast_edge_moves_followed",
            "Fetches sent on to another origin: a redirect, a 404 or an unreachable owner",
            labels=["reason"],
        )
        for reason, count in self.routes.moves.items():
            moves.add_metric([reason], count)
        yield moves


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = RequestCounts()
        r.register(self.requests)
        self.route_counts = RouteCounts()
        r.register(self.route_counts)
        self.prefetches = Counter(
            "shopcast_edge_prefetches", "Preload-hinted parts fetched ahead of viewers", registry=r
        )
        self.upstream = Histogram(
            "shopcast_edge_upstream_seconds",
            "Upstream fetch time (blocking playlist requests and hinted parts wait on purpose)",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
            registry=r,
        )
        self.upstream_errors = Counter(
            "shopcast_edge_upstream_errors", "Fetches no origin answered", registry=r
        )
        self.rejected = Counter(
            "shopcast_edge_rejected", "Requests refused at the edge", ["reason"], registry=r
        )
        self.waiters = Gauge(
            "shopcast_edge_waiters", "Requests waiting on an upstream fetch", registry=r
        )
        self.cache_bytes = Gauge("shopcast_edge_cache_bytes", "Bytes held in the cache", registry=r)
        self.viewers = Gauge(
            "shopcast_edge_viewers", "Distinct viewers seen recently", ["stream"], registry=r
        )
