"""Fixtures for end-to-end tests: a real shopcast origin in-process and real ffmpeg publishers
(the helpers live in :mod:`benchmarks.harness.origin`, shared with the benchmarks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

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
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium (tests using it skip themselves when it is missing)."""
    async with chromium() as b:
        yield b
