"""The edge tests' helpers live in :mod:`harness.edge` (the edge benchmark uses them too)."""

from harness.edge import (
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
