"""``shopcast`` command line: ``serve`` runs the origin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from shopcast.config import ConfigError, load_config
from shopcast.server import DEMO_STREAM, ShopcastServer


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


async def _serve(server: ShopcastServer) -> None:
    async def announce() -> None:
        # Printed once the sockets are bound, so the ports are the real ones.
        while not server.http_port:
            await asyncio.sleep(0.01)
        w = server.welcome
        lines = ["shopcast is running"]
        if w.api_token:
            lines.append(f"  API token (keep it secret): {w.api_token}")
        demo = server.store.get_stream(DEMO_STREAM)
        if w.demo_key and demo is not None:
            urls = server.urls(DEMO_STREAM, w.demo_key)
            lines += [
                f"  demo stream created; publish to: {urls['rtmp_url']}",
                f"  playback: {urls['playback_url']}",
                f"  status:   curl -H 'Authorization: Bearer <token>' "
                f"http://{server.config.server.public_host}:{server.http_port}"
                f"/api/v1/streams/{DEMO_STREAM}",
            ]
        print("\n".join(lines), flush=True)

    task = asyncio.ensure_future(announce())
    try:
        await server.run_until_signal()
    finally:
        task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the origin (RTMP ingest + HTTP)")
    serve.add_argument("--config", help="TOML config file (env SHOPCAST_<SECTION>_<KEY> overrides)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"shopcast: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        server = ShopcastServer(config)
        _run(_serve(server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
