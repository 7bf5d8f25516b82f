"""The edge tests' helpers: :mod:`benchmarks.harness.edge` (shared with the edge benchmark)."""

from benchmarks.harness.edge import (
    NGINX,
    LoggedOrigin,
    edge_process,
    get_json,
    get_text,
    logged_origin,
    nginx_edge,
    publish,
    requires_nginx,
    wait_live,
)

__all__ = [
    "NGINX",
    "LoggedOrigin",
    "edge_process",
    "get_json",
    "get_text",
    "logged_origin",
    "nginx_edge",
    "publish",
    "requires_nginx",
    "wait_live",
]
