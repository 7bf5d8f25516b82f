"""``shopcast edge`` arguments and entry point (the main CLI mounts this subcommand)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from cdn_edge.server import EdgeConfig, EdgeServer
from shopcast.store import DatabaseUnavailable


def add_edge_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    edge = sub.add_parser("edge", help="run an HLS edge cache in front of one or more origins")
    edge.add_argument(
        "--origin",
        default="",
        help="origin base URL(s), comma-separated in failover order (http://127.0.0.1:8080); "
        "any origin of a cluster will do: it redirects to a stream's owner",
    )
    edge.add_argument(
        "--cluster",
        default="",
        help="the cluster store (postgresql://…): streams are fetched from their owning origin "
        "and the edge registers itself there (then --origin is optional)",
    )
    edge.add_argument(
        "--node-timeout",
        type=float,
        default=6.0,
        help="the cluster's [cluster] node_timeout in seconds (default %(default)s)",
    )
    edge.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT (default %(default)s)")
    edge.add_argument(
        "--playback-secret",
        default="",
        help="the origin's playback.secret: tokens are checked at the edge",
    )
    edge.add_argument(
        "--origin-token", default="", help="API token for reporting viewer counts to the origins"
    )
    edge.add_argument(
        "--cache-bytes",
        type=int,
        default=256 << 20,
        help="memory bound of the cache in bytes (default %(default)s)",
    )
    edge.add_argument("--edge-id", default="", help="name in viewer reports (default: generated)")
    edge.add_argument("--log-level", default="INFO")


def edge_config(args: argparse.Namespace) -> EdgeConfig:
    """The edge's settings from parsed arguments (ValueError names what is wrong)."""
    origins = tuple(u.strip() for u in args.origin.split(",") if u.strip())
    if args.cluster and not args.cluster.startswith(("postgresql://", "postgres://")):
        raise ValueError("--cluster takes the cluster store's postgresql:// URL")
    if not origins and not args.cluster:
        raise ValueError("give --origin URL(s), or --cluster postgresql://…")
    if not all(u.startswith(("http://", "https://")) for u in origins):
        raise ValueError("--origin takes http(s):// URLs, comma-separated")
    if not 0.3 <= args.node_timeout <= 600:
        raise ValueError("--node-timeout must be in 0.3..600 seconds")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("--listen takes HOST:PORT")
    if args.cache_bytes < 1 << 20:
        raise ValueError("--cache-bytes must be at least 1048576")
    extra = {"edge_id": args.edge_id} if args.edge_id else {}
    return EdgeConfig(
        origins=origins,
        host=host.strip("[]"),
        port=int(port),
        playback_secret=args.playback_secret,
        origin_token=args.origin_token,
        cache_bytes=args.cache_bytes,
        cluster=args.cluster,
        node_timeout=args.node_timeout,
        **extra,
    )


def run_edge(args: argparse.Namespace) -> int:
    try:
        config = edge_config(args)
    except ValueError as exc:
        print(f"shopcast edge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = EdgeServer(config)
    # Each request leaves short-lived garbage; the default gen-0 threshold (700) made the
    # collector run every few dozen requests and walk the modules loaded at start-up. Freeze
    # those and collect young objects less often (a pass over 10,000 young objects takes ~0.4 ms).
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(server.run_until_signal())
        else:
            uvloop.run(server.run_until_signal())
    except DatabaseUnavailable as exc:
        print(f"shopcast edge: the cluster store cannot be used: {exc}", file=sys.stderr)
        return 1
    return 0
