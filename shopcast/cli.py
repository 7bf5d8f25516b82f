"""``shopcast`` command line: ``serve`` runs the origin (``--demo``: plus a built-in show)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from cdn_edge.cli import add_edge_parser, run_edge
from shopcast.config import ConfigError, load_config
from shopcast.demo import SIZE_ENV, DemoPublisher, DemoSettings, demo_size
from shopcast.logs import setup_logging
from shopcast.server import DEMO_STREAM, ShopcastServer
from shopcast.store import DatabaseUnavailable


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


async def _serve(server: ShopcastServer, demo: DemoSettings | None = None) -> None:
    async def announce() -> None:
        # Printed once the sockets are bound, so the ports are the real ones.
        while not server.http_port:
            await asyncio.sleep(0.01)
        if demo is not None:
            publisher = DemoPublisher(server, demo)
            server.before_close.append(publisher.stop)
            await publisher.start()
        w = server.welcome
        lines = ["shopcast is running"]
        if w.api_token:
            lines.append(f"  API token (keep it secret): {w.api_token}")
        if w.demo_key and await server.store.get_stream(DEMO_STREAM) is not None:
            urls = server.urls(DEMO_STREAM, w.demo_key)
            lines += [
                f"  demo stream created; publish to: {urls['rtmp_url']}",
                *([f"  or over SRT: {urls['srt_url']}"] if "srt_url" in urls else []),
                f"  playback: {urls['playback_url']}",
                f"  status:   curl -H 'Authorization: Bearer <token>' "
                f"http://{server.config.server.public_host}:{server.http_port}"
                f"/api/v1/streams/{DEMO_STREAM}",
            ]
        if demo is not None:
            lines.append(
                f"  demo show: http://{server.config.server.public_host}:{server.http_port}"
                f"/demo/{DEMO_STREAM} (built-in publisher, a new product pinned every "
                f"{demo.pin_every:g} s)"
            )
        print("\n".join(lines), flush=True)

    task = asyncio.ensure_future(announce())
    try:
        await server.run_until_signal()
    finally:
        task.cancel()


def build_parser() -> argparse.ArgumentParser:
    """Every ``shopcast`` subcommand and flag (deploy/ files are checked against it)."""
    parser = argparse.ArgumentParser(prog="shopcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the origin (RTMP ingest + HTTP)")
    serve.add_argument("--config", help="TOML config file (env SHOPCAST_<SECTION>_<KEY> overrides)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also run a built-in publisher: a synthetic vertical show with a tone on stream "
        "'demo' (over RTMP to this server) that pins a new product every few seconds, so "
        "/demo/demo is a live shop page at once",
    )
    serve.add_argument(
        "--demo-size",
        metavar="WxH",
        help=f"picture size of the --demo show (default 540x960; env {SIZE_ENV}, "
        "e.g. 360x640 to keep it light)",
    )
    serve.add_argument(
        "--demo-pin-every",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="seconds between the --demo show's product pins (default 5)",
    )
    add_edge_parser(sub)
    # The load tool is a program of its own (benchmarks/loadtest), reachable from this command.
    from benchmarks.loadtest.cli import add_loadtest_parser

    add_loadtest_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "edge":
        return run_edge(args)
    if args.command == "loadtest":
        from benchmarks.loadtest.cli import run_loadtest

        return run_loadtest(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"shopcast: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.format)
    if args.command == "serve":
        demo = None
        if args.demo:
            try:
                size = demo_size(args.demo_size)
            except ValueError as exc:
                print(f"shopcast: {exc}", file=sys.stderr)
                return 2
            if not 1.0 <= args.demo_pin_every <= 3600:
                print("shopcast: --demo-pin-every must be within 1..3600 s", file=sys.stderr)
                return 2
            demo = DemoSettings(size=size, pin_every=args.demo_pin_every)
        server = ShopcastServer(config)
        try:
            _run(_serve(server, demo))
        except DatabaseUnavailable as exc:
            print(f"shopcast: the store is unavailable: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
