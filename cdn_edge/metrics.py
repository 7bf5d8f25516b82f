"""The edge's Prometheus metrics, in a registry of its own (served at the edge's /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter("shopcast_edge_cache_hits", "Requests served from cache", registry=r)
        self.misses = Counter(
            "shopcast_edge_cache_misses", "Requests that started an upstream fetch", registry=r
        )
        self.collapsed = Counter(
            "shopcast_edge_collapsed",
            "Requests that joined an upstream fetch already in flight",
            registry=r,
        )
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
        self.bytes_out = Counter(
            "shopcast_edge_bytes_out", "Response body bytes sent to viewers", registry=r
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
