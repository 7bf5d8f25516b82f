"""Continuity benchmarks: how fast the slate follows a dropped publisher, and what it costs.

An in-process origin (the e2e tests' config, ladder ``SOURCE`` passthrough + one encoded rung)
gets a real-time Debian ffmpeg publish (testsrc2 + sine, libx264 + AAC).

1. Slate latency: the publisher is SIGKILLed; from the arrival of its last media unit at ingest
   to the first slate part being listed on each rendition, as a player's blocking playlist
   reload sees it (p50/p95 over rounds; goal p95 ≤ one part target + 100 ms). Each round the
   publisher comes back first, so every round is a drop of a live show.
2. CPU of a stream on slate against the same stream live, same run: process CPU time (every
   thread of the origin; ffmpeg is another process) over the same wall time, live then on slate.
Figures go to ``extra_info`` and a printed line; the goals are verdicts, never asserts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness.continuity import PlaylistWatch
from benchmarks.harness.origin import (
    Origin,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from benchmarks.loadtest.stats import percentile
from shopcast.config import ContinuitySection
from shopcast.server import ShopcastServer
from transcode.policy import LadderConfig

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
SOURCE, RUNGS = (
    ("180x320", ["180p:200k", "90p:100k"]) if SMOKE else ("720x1280", ["720p:3000k", "360p:730k"])
)
ROUNDS = int(os.environ.get("SHOPCAST_BENCH_SLATE_ROUNDS", 3 if SMOKE else 15))
CPU_WINDOW = float(
    os.environ.get("SHOPCAST_BENCH_SLATE_CPU_WINDOW", 2 if SMOKE else 10)
)  # s live, s slate
SLATE_BUDGET = 0.100  # the goal: p95 ≤ part target + 100 ms


@asynccontextmanager
async def running_origin(tmp_path: Path, **continuity: Any) -> AsyncIterator[Origin]:
    config = dataclasses.replace(
        make_config(tmp_path, LadderConfig.from_mapping({"rungs": RUNGS})),
        continuity=ContinuitySection(slate_window=600, **continuity),
    )
    server = ShopcastServer(config)
    await server.start()
    try:
        yield Origin(server)
    finally:
        await server.close()


async def publish(origin: Origin) -> asyncio.subprocess.Process:
    url = origin.rtmp_url(await origin.key())
    return await start_ffmpeg(ffmpeg_publish_args(url, seconds=600, size=SOURCE, realtime=True))


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def measure(tmp_path: Path) -> dict[str, Any]:
    latencies: list[float] = []
    async with running_origin(tmp_path) as origin, aiohttp.ClientSession() as http:
        publisher = await publish(origin)
        try:

            def ready() -> bool:
                package = origin.server.pipelines.package("demo")
                return package is not None and bool(package.renditions and package.slate_clips)

            await until(ready, 60, "the ladder and its slate")
            package = origin.server.pipelines.package("demo")
            assert package is not None
            part_target = float(package.config.part_target)
            names = list(package.renditions)

            # (2) CPU live, then on slate, over the same wall time; no watcher runs meanwhile.
            await asyncio.sleep(2)
            cpu0 = time.process_time()
            await asyncio.sleep(CPU_WINDOW)
            cpu_live = time.process_time() - cpu0
            publisher.send_signal(signal.SIGKILL)
            await publisher.wait()
            await until(lambda: package.active_input == "slate", 10, "the slate")
            cpu0 = time.process_time()
            await asyncio.sleep(CPU_WINDOW)
            cpu_slate = time.process_time() - cpu0

            # (1) slate latency, one drop per round, each after the publisher is back.
            for _ in range(ROUNDS):
                watches = [
                    PlaylistWatch(http, f"{origin.http}/hls/demo/{n}/index.m3u8") for n in names
                ]
                tasks = [asyncio.create_task(w.run()) for w in watches]
                try:

                    def listed(ws: list[PlaylistWatch] = watches) -> bool:
                        return all(w.parts for w in ws)

                    await until(listed, 10, "the slate's parts")
                    slate = [w.discontinuity for w in watches]
                    publisher = await publish(origin)

                    def back(ws: list[PlaylistWatch] = watches, s: list[int] = slate) -> bool:
                        return all(
                            sum(1 for _, d in w.parts.values() if d > old) >= 3
                            for w, old in zip(ws, s, strict=True)
                        )

                    await until(back, 30, "the publisher's parts")  # a live show drops
                    session = origin.captures[-1].session
                    before = [w.discontinuity for w in watches]
                    publisher.send_signal(signal.SIGKILL)
                    await publisher.wait()

                    def switched(ws: list[PlaylistWatch] = watches, b: list[int] = before) -> bool:
                        return all(w.discontinuity > d for w, d in zip(ws, b, strict=True))

                    await until(switched, 10, "the slate listed")
                    assert session.last_media is not None
                    for w, d in zip(watches, before, strict=True):
                        first = min(t for t, disc in w.parts.values() if disc == d + 1)
                        latencies.append(first - session.last_media)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await stop_ffmpeg(publisher)
    return {
        "part_target": part_target,
        "latencies": latencies,
        "cpu_live": cpu_live,
        "cpu_slate": cpu_slate,
    }


@requires_ffmpeg
def test_bench_slate_latency_and_cpu(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    def run() -> dict[str, Any]:
        return asyncio.run(measure(tmp_path))

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    latencies, part_target = result["latencies"], result["part_target"]
    assert len(latencies) >= ROUNDS and all(v > 0 for v in latencies)
    p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)
    goal = part_target + SLATE_BUDGET
    ratio = result["cpu_slate"] / result["cpu_live"]
    verdict = "PASS" if p95 <= goal else "FAIL"
    benchmark.extra_info.update(
        source=SOURCE,
        rungs=RUNGS,
        drops=ROUNDS,
        part_target_ms=round(part_target * 1000),
        slate_latency_p50_ms=round(p50 * 1000, 1),
        slate_latency_p95_ms=round(p95 * 1000, 1),
        goal_ms=round(goal * 1000),
        cpu_s_live=round(result["cpu_live"], 3),
        cpu_s_slate=round(result["cpu_slate"], 3),
        cpu_window_s=CPU_WINDOW,
        summary={
            "ratio": ratio,
            "reference": "the same stream live (ffmpeg publishing, ladder encoding), same run",
            "value": f"slate listed {p50 * 1000:.0f}/{p95 * 1000:.0f} ms (p50/p95) after the "
            f"last frame ({verdict}, goal {goal * 1000:.0f} ms); slate CPU {ratio:.3f}× live",
        },
    )
    with capsys.disabled():
        print(
            f"\nslate: last frame → first slate part listed p50 {p50 * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms over {len(latencies)} rendition-drops ({verdict}, goal "
            f"≤ {goal * 1000:.0f} ms); CPU on slate {ratio:.3f}× live "
            f"({result['cpu_slate']:.2f} s vs {result['cpu_live']:.2f} s in {CPU_WINDOW:g} s)"
        )
