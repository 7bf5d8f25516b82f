"""Latency benchmarks of the packager issue: what the origin adds, and what hls.js plays at.

Both publish a 360×640 30 fps testsrc2 + sine stream with Debian ffmpeg in real time (``-re``)
to an in-process origin with the e2e tests' small ladder (360p passthrough + 180p encoded).
Figures go to ``extra_info`` and a printed table; the goals are printed verdicts, never asserts.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness.origin import Origin, ffmpeg_publish_args, make_config, requires_ffmpeg
from benchmarks.loadtest.stats import percentile
from packager.live import LivePackage
from shopcast.server import ShopcastServer
from shopcast.web import HLS_JS

CHROMIUM = shutil.which("chromium")
HAS_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"  # tests/benchmarks: tiny sizes
SOURCE_SIZE = "360x640"
FPS = 30


def last_frame_of_each_part(latencies: Sequence[float]) -> list[float]:
    """The latency of each part's last frame, from the flat per-frame sequence.

    A part's frames are listed at the same instant and arrived in order (no B-frames), so their
    latencies fall within the part; the next part's first frame waited a part longer and starts
    a new run. Each falling run's minimum is its part's last frame.
    """
    lasts: list[float] = []
    for i, value in enumerate(latencies):
        if i == 0 or value > latencies[i - 1]:
            lasts.append(value)
        else:
            lasts[-1] = min(lasts[-1], value)
    return lasts


@asynccontextmanager
async def running_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    try:
        yield Origin(server)
    finally:
        await server.close()


async def start_publisher(origin: Origin, seconds: float) -> asyncio.subprocess.Process:
    args = ffmpeg_publish_args(
        origin.rtmp_url(await origin.key()),
        seconds=seconds,
        size=SOURCE_SIZE,
        rate=FPS,
        realtime=True,
    )
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


# -- (a) server-added latency ------------------------------------------------------------------

SERVER_PUBLISH = 12.0 if SMOKE else 30.0
SERVER_WARM_UP = (
    2.0 if SMOKE else 5.0
)  # after the first listed part: the ladder is planned, encoders are warm
SERVER_BUDGET = 0.050  # the goal: p95 ≤ part target + 50 ms


async def first_parts_listed(origin: Origin, timeout: float = 20.0) -> LivePackage:
    """The demo stream's package, once every rendition has listed a part."""
    deadline = time.monotonic() + timeout
    while True:
        package = origin.server.pipelines.package("demo")
        renditions = package.renditions.values() if package is not None else ()
        if package is not None and renditions and all(r.frame_latency for r in renditions):
            return package
        assert time.monotonic() < deadline, f"no part listed within {timeout:.0f} s"
        await asyncio.sleep(0.1)


async def measure_server_latency(tmp_path: Path) -> tuple[float, dict[str, list[float]]]:
    """(part target, frame latencies per rendition) between the warm-up and the publish's end."""
    async with running_origin(tmp_path) as origin:
        publisher = await start_publisher(origin, SERVER_PUBLISH)
        try:
            package = await first_parts_listed(origin)
            await asyncio.sleep(SERVER_WARM_UP)
            skip = {name: len(r.frame_latency) for name, r in package.renditions.items()}
            await asyncio.wait_for(publisher.wait(), SERVER_PUBLISH + 30)
            assert publisher.returncode == 0, f"ffmpeg exited with {publisher.returncode}"
            latencies = {}
            for name, r in package.renditions.items():
                assert len(r.frame_latency) < (r.frame_latency.maxlen or 0), "deque wrapped"
                latencies[name] = list(r.frame_latency)[skip[name] :]
            return float(package.config.part_target), latencies
        finally:
            await stop(publisher)


@requires_ffmpeg
def test_bench_server_added_latency(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    """Per-frame latency from ingest arrival to its part being listed in the playlist.

    A part is listed once complete, so a frame's figure includes waiting for the rest of its
    part: the first frame of a part waits about a part duration. ``last`` is each part's last
    frame (see ``last_frame_of_each_part``): the processing cost, plus one frame interval (a
    part closes when the next part's first frame comes) and, on the passthrough rendition, one
    more (a passed-through packet waits for the next one to know its duration).
    """

    def run() -> tuple[float, dict[str, list[float]]]:
        return asyncio.run(measure_server_latency(tmp_path))

    part_target, latencies = benchmark.pedantic(run, rounds=1, iterations=1)
    goal = part_target + SERVER_BUDGET
    measured = SERVER_PUBLISH - SERVER_WARM_UP - 2  # minus the start-up before the first part
    info: dict[str, Any] = {"part_target_ms": round(part_target * 1000), "goal_ms": goal * 1000}
    lines = [
        f"\nserver-added latency, ms (ingest arrival → part listed; part target "
        f"{part_target * 1000:.0f} ms, goal p95 ≤ {goal * 1000:.0f} ms)",
        f"{'rendition':<10}{'frames':>7}{'p50':>7}{'p95':>7}{'p99':>7}"
        f"{'parts':>7}{'last p50':>10}{'last p95':>10}{'last p99':>10}  verdict",
    ]
    for name, values in sorted(latencies.items()):
        assert len(values) >= measured * FPS * 0.8, f"{name}: only {len(values)} frames"
        assert all(v >= 0 for v in values)
        lasts = last_frame_of_each_part(values)
        assert len(lasts) >= measured / part_target * 0.8, f"{name}: {len(lasts)} parts"
        p50, p95, p99 = (percentile(values, q) for q in (0.50, 0.95, 0.99))
        l50, l95, l99 = (percentile(lasts, q) for q in (0.50, 0.95, 0.99))
        verdict = "PASS" if p95 <= goal else "FAIL"
        info[name] = {
            "frames": len(values),
            "parts": len(lasts),
            "p50_ms": round(p50 * 1000, 1),
            "p95_ms": round(p95 * 1000, 1),
            "p99_ms": round(p99 * 1000, 1),
            "last_frame_p50_ms": round(l50 * 1000, 1),
            "last_frame_p95_ms": round(l95 * 1000, 1),
            "last_frame_p99_ms": round(l99 * 1000, 1),
            "goal_met": p95 <= goal,
        }
        lines.append(
            f"{name:<10}{len(values):>7}{p50 * 1000:>7.0f}{p95 * 1000:>7.0f}{p99 * 1000:>7.0f}"
            f"{len(lasts):>7}{l50 * 1000:>10.0f}{l95 * 1000:>10.0f}{l99 * 1000:>10.0f}  {verdict}"
        )
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print("\n".join(lines))


# -- (b) hls.js latency ------------------------------------------------------------------------

PLAYER_PUBLISH = 75.0
PLAYER_WINDOW = 60.0
PLAYER_SAMPLE_MS = 250
PLAYER_START_TIMEOUT = PLAYER_PUBLISH - PLAYER_WINDOW - 3  # the window must end before the publish
PLAYER_GOAL = 1.5  # the goal: hls.latency p50 ≤ 1.5 s

# Counts `waiting` events and samples hls.js every 250 ms, in the page (no round trips).
START_SAMPLING = """(ms) => {
  const video = document.getElementById("video");
  const bench = window.bench = { samples: [], stalls: 0, errors: window.shopcast.errors.length };
  video.addEventListener("waiting", () => { bench.stalls += 1; });
  bench.timer = setInterval(() => bench.samples.push({
    latency: hls.latency, target: hls.targetLatency, drift: hls.drift,
    time: video.currentTime, level: hls.currentLevel,
  }), ms);
}"""
STOP_SAMPLING = """() => {
  clearInterval(window.bench.timer);
  const errors = window.shopcast.errors.slice(window.bench.errors);
  return { samples: window.bench.samples, stalls: window.bench.stalls, errors };
}"""


async def measure_player_latency(tmp_path: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    # The e2e test's flags; imported by name so mypy (run on benchmarks/) skips that module.
    from benchmarks.harness.browser import CHROMIUM_ARGS as chromium_args

    async with running_origin(tmp_path) as origin, async_playwright() as pw:
        publisher = await start_publisher(origin, PLAYER_PUBLISH)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args)
        try:
            page = await browser.new_page()
            await page.goto(f"{origin.http}/demo/demo")
            await page.wait_for_function(
                "document.getElementById('video').currentTime > 0.5",
                timeout=PLAYER_START_TIMEOUT * 1000,
            )
            await page.evaluate(START_SAMPLING, PLAYER_SAMPLE_MS)
            await asyncio.sleep(PLAYER_WINDOW)
            result: dict[str, Any] = await page.evaluate(STOP_SAMPLING)
            result["all_errors"] = await page.evaluate("window.shopcast.errors")
            assert publisher.returncode is None, "the publish ended inside the window"
            return result
        finally:
            await browser.close()
            await stop(publisher)


@requires_ffmpeg
@pytest.mark.skipif(SMOKE, reason="smoke run: a browser needs a minute, there is no tiny size")
@pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright not installed")
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")
@pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not vendored (make install)")
def test_bench_hlsjs_latency(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    """hls.js (lowLatencyMode) in headless Chromium: ``hls.latency`` sampled for 60 s of play.

    ``hls.latency`` is the distance from the playlist's live edge (end of the last listed part,
    aged since the playlist loaded) to the playhead; glass to glass adds the encoder, RTMP and
    the server-added latency of the other benchmark. Stalls are the video's ``waiting`` events.
    """

    def run() -> dict[str, Any]:
        return asyncio.run(measure_player_latency(tmp_path))

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    samples = result["samples"]
    fatal = [e for e in result["all_errors"] if e["fatal"]]
    assert fatal == [], fatal
    expected = PLAYER_WINDOW * 1000 / PLAYER_SAMPLE_MS
    assert len(samples) >= expected * 0.8, f"only {len(samples)} of ~{expected:.0f} samples"
    valid = [s for s in samples if isinstance(s["latency"], float | int) and s["latency"] > 0]
    assert len(valid) >= len(samples) * 0.9, f"hls.latency unset in {len(samples) - len(valid)}"
    played = samples[-1]["time"] - samples[0]["time"]
    assert played >= PLAYER_WINDOW * 0.6, f"playback stalled: {played:.1f} s in the window"

    latency = [float(s["latency"]) for s in valid]
    targets = [float(s["target"]) for s in valid if isinstance(s["target"], float | int)]
    drifts = [float(s["drift"]) for s in valid if isinstance(s["drift"], float | int)]
    p50, p95 = percentile(latency, 0.50), percentile(latency, 0.95)
    target = percentile(targets, 0.5) if targets else math.nan
    drift = percentile(drifts, 0.5) if drifts else math.nan
    levels = sorted({s["level"] for s in samples})
    verdict = "PASS" if p50 <= PLAYER_GOAL else "FAIL"
    benchmark.extra_info.update(
        samples=len(latency),
        latency_p50_s=round(p50, 3),
        latency_p95_s=round(p95, 3),
        latency_min_s=round(min(latency), 3),
        latency_max_s=round(max(latency), 3),
        target_latency_p50_s=round(target, 3),
        drift_p50=round(drift, 3),
        stalls=result["stalls"],
        non_fatal_errors=len(result["errors"]),
        played_s=round(played, 2),
        levels=levels,
        goal_met=p50 <= PLAYER_GOAL,
    )
    with capsys.disabled():
        print(
            f"\nhls.js latency over {PLAYER_WINDOW:.0f} s ({len(latency)} samples, every "
            f"{PLAYER_SAMPLE_MS} ms; goal p50 ≤ {PLAYER_GOAL} s)\n"
            f"{'p50':>7}{'p95':>7}{'min':>7}{'max':>7}{'target':>8}{'drift':>7}"
            f"{'stalls':>8}{'errors':>8}  verdict\n"
            f"{p50:>7.2f}{p95:>7.2f}{min(latency):>7.2f}{max(latency):>7.2f}{target:>8.2f}"
            f"{drift:>7.2f}{result['stalls']:>8}{len(result['errors']):>8}  {verdict}"
            f"  (levels {levels}, played {played:.1f} s)"
        )
