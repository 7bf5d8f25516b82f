"""Churn leaves no residue: publishers killed mid-show one after another; once their slate
windows have passed, the origin's threads, open fds and asyncio tasks are back to baseline."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shopcast.config import ContinuitySection, PackagerSection
from shopcast.server import ShopcastServer
from transcode.policy import LadderConfig

from .conftest import ffmpeg_publish_args, make_config, requires_ffmpeg, start_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]

PUBLISHERS = 4
RECONNECT_WINDOW = 0.5
SLATE_WINDOW = 1.0
#: A passthrough rung and an encoded one: decoder, encoder and audio threads all run.
LADDER = LadderConfig.from_mapping({"rungs": ["180p:200k", "90p:100k"], "segment_duration": 1})
WINDOW_SEGMENTS = 6
#: An ended show stays servable this long (``Pipelines._release``), then is let go.
LINGER = (WINDOW_SEGMENTS + 1) * 1.0
#: What may differ from the baseline (a default-executor thread started meanwhile, …).
SLACK = 2


@dataclasses.dataclass(frozen=True)
class Residue:
    threads: int
    fds: int
    tasks: int
    rss_mb: float

    @classmethod
    def now(cls) -> Residue:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        return cls(
            threads=len(os.listdir("/proc/self/task")),
            fds=len(os.listdir("/proc/self/fd")),
            tasks=len(asyncio.all_tasks()),
            rss_mb=rss_pages * os.sysconf("SC_PAGE_SIZE") / 1e6,
        )

    def within(self, base: Residue) -> bool:
        return (
            self.threads <= base.threads + SLACK
            and self.fds <= base.fds + SLACK
            and self.tasks <= base.tasks + SLACK
        )


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[ShopcastServer]:
    """The origin alone: no test reader on its hubs, so its memory is its own."""
    config = dataclasses.replace(
        make_config(tmp_path, LADDER),
        packager=PackagerSection(
            reconnect_window=RECONNECT_WINDOW, window_segments=WINDOW_SEGMENTS
        ),
        continuity=ContinuitySection(gap_timeout=0.5, slate_window=SLATE_WINDOW),
    )
    server = ShopcastServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def until(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def show(origin: ShopcastServer, stream_id: str) -> None:
    """Publish to ``stream_id`` until its slate is encoded and parts flow, then SIGKILL."""
    record = await origin.store.get_stream(stream_id)
    if record is None:
        record = await origin.store.create_stream(stream_id)
    url = f"rtmp://127.0.0.1:{origin.rtmp.port}/live/{record.stream_key}"
    proc = await start_ffmpeg(ffmpeg_publish_args(url, seconds=60, realtime=True))
    try:

        def on_air() -> bool:
            package = origin.pipelines.package(stream_id)
            return (
                package is not None
                and bool(package.slate_clips)
                and all(r.state.last_position is not None for r in package.renditions.values())
            )

        assert await until(on_air, 30), f"{stream_id} never went on air"
    finally:
        proc.kill()
        await proc.wait()


def ended(origin: ShopcastServer, stream_id: str) -> bool:
    package = origin.pipelines.package(stream_id)
    return package is None or package.ended


async def test_killed_publishers_leave_no_threads_fds_or_tasks(origin: ShopcastServer) -> None:
    # Warm-up show: lazily started pools and loaded codecs belong to the baseline.
    await show(origin, "warmup")
    assert await until(lambda: "warmup" not in origin.pipelines.pipelines, 30)
    base = Residue.now()
    for n in range(PUBLISHERS):
        await show(origin, f"churn{n}")
    during = Residue.now()
    # The last show's series exist until it is released (a slate window and a linger away).
    parts = {"stream": f"churn{PUBLISHERS - 1}", "rendition": "180p"}
    assert origin.metrics.registry.get_sample_value("shopcast_parts_total", parts)
    ids = [f"churn{n}" for n in range(PUBLISHERS)]
    assert await until(lambda: all(ended(origin, i) for i in ids), 10 + SLATE_WINDOW)
    settled = await until(lambda: Residue.now().within(base), 10)
    after = Residue.now()
    assert settled, f"residue after {PUBLISHERS} killed shows: {after} (baseline {base})"
    assert origin.rtmp.connections == set()
    # The ended shows themselves (parts, slates, metrics series) go one window later.
    pipelines = origin.pipelines.pipelines
    assert await until(lambda: not set(ids) & set(pipelines), LINGER + 5)
    for stream in ids:
        parts = {"stream": stream, "rendition": "180p"}
        assert origin.metrics.registry.get_sample_value("shopcast_parts_total", parts) is None
    await asyncio.sleep(0.5)
    released = Residue.now()
    print(
        f"\nchurn residue of {PUBLISHERS} killed shows: baseline {base}\n  while on slate {during}"
        f"\n  after the slate windows {after}\n  after release {released}"
    )
    assert released.within(base)
