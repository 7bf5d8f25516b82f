"""Fixtures for end-to-end tests: a real shopcast origin in-process and real ffmpeg publishers
(the helpers live in :mod:`benchmarks.harness.origin`, shared with the benchmarks)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from benchmarks.harness.browser import chromium
from benchmarks.harness.disks import tiny_disk  # noqa: F401  (fixture: a 256 kB tmpfs)
from benchmarks.harness.origin import (
    API_TOKEN,
    FFMPEG,
    SMALL_LADDER,
    Capture,
    Origin,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    run_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from benchmarks.harness.s3_server import s3_server  # noqa: F401  (fixture: a real S3 server on loopback)
from shopcast.server import ShopcastServer
from transcode.policy import LadderConfig

__all__ = [
    "API_TOKEN",
    "FFMPEG",
    "SMALL_LADDER",
    "Capture",
    "Origin",
    "ffmpeg_publish_args",
    "make_config",
    "requires_ffmpeg",
    "run_ffmpeg",
    "start_ffmpeg",
    "stop_ffmpeg",
]


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[Origin]:
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    yield Origin(server)
    await server.close()


@pytest.fixture
async def small_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    """An origin with one 180p rung: repeated browser shows stay real-time on a loaded machine."""
    server = ShopcastServer(
        make_config(tmp_path, LadderConfig.from_mapping({"rungs": ["180p:200k"]}))
    )
    await server.start()
    yield Origin(server)
    await server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium (tests using it skip themselves when it is missing)."""
    async with chromium() as b:
        yield b


class Receiver:
    """A local HTTP receiver: records requests, answers with ``reply``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.reply: Callable[[], Awaitable[web.Response]] = self._ok
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _ok(self) -> web.Response:
        return web.Response(status=204)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return await self.reply()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]
