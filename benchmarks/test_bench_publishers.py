"""Publishers per core in passthrough mode: how many real-time RTMP publishers one origin holds
when it transcodes nothing (``SHOPCAST_TRANSCODE_RUNGS=""``, passthrough on: a 9:16 H.264 source
is packaged as it comes, audio included).

``shopcast serve`` runs as a subprocess (its CPU is ``process_cpu_seconds_total`` from its own
``/metrics``); N Debian ffmpeg publishers replay one recorded FLV (360×640 H.264, 1 s GOP, AAC)
with ``-re -stream_loop -1 -c copy`` to N streams created through the API — the
``shopcast loadtest`` machinery, with no viewers. N doubles each step (about 20 s each) until the
hub drops frames, a publisher falls off, or the server-added part lateness (last frame of a part
in → part listed, from the server's histogram) has p95 over one part target. Figures go to
``extra_info`` and a printed table; nothing about speed is asserted.

With ``SHOPCAST_BENCH_BASELINE_TREE`` set to an older checkout (``git worktree add --detach
<dir> <commit>``, its ``native/*.so`` built or copied in), a second benchmark runs the same
publishers against that tree's ``shopcast serve`` (this venv's Python, ``PYTHONPATH`` the tree)
and this one, rounds interleaved, and reports server CPU per publisher as a median ratio.

The connect-storm benchmark makes ``STORM`` streams and connects as many light RTMP publishers
(``ingest.rtmp.client``, no ffmpeg, no media) at once: all must go live; the figure is the time
to the last ``NetStream.Publish.Start`` (against the baseline tree too when it is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, serve_env
from benchmarks.loadtest.options import LoadTestOptions
from benchmarks.loadtest.run import run_load
from ingest.rtmp.client import RTMPPublisher

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
FFMPEG = shutil.which("ffmpeg")
CONFIG = Path(__file__).parents[1] / "shopcast.toml"
TOKEN = "bench-publishers-token"
SIZE, FPS = "360x640", 30
SOURCE_SECONDS = 3 if SMOKE else 10
STEPS = (1,) if SMOKE else (1, 2, 4, 8, 16, 32, 64)
STEP_SECONDS = 4.0 if SMOKE else 20.0
PART_TARGET = 1 / 3  # shopcast.toml's part_target
BASELINE_TREE = os.environ.get("SHOPCAST_BENCH_BASELINE_TREE")
COMPARE_PUBLISHERS = 2 if SMOKE else 8
COMPARE_ROUNDS = 3 if SMOKE else 5


@pytest.fixture(scope="module")
def recorded_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone-like vertical publish, encoded once: 360×640 30 fps H.264 (1 s GOP) + AAC."""
    assert FFMPEG is not None
    path = tmp_path_factory.mktemp("publishers") / "recorded.flv"
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={FPS}"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SOURCE_SECONDS)]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-b:v", "800k", "-pix_fmt", "yuv420p"]
    cmd += ["-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-bf", "0"]
    subprocess.run([*cmd, "-c:a", "aac", "-b:a", "96k", str(path)], check=True)
    return path


@contextlib.contextmanager
def origin_process(folder: Path, tree: str | None = None) -> Iterator[tuple[str, str]]:
    """``shopcast serve``, passthrough only, on free 127.0.0.1 ports: (HTTP base, RTMP base);
    from the checkout ``tree`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    srv = serve_env(
        folder,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_TRANSCODE_RUNGS="",  # no encoded rungs: LadderConfig accepts it with passthrough
        SHOPCAST_TRANSCODE_PASSTHROUGH="true",
        SHOPCAST_LOG_LEVEL="WARNING",
    )
    env = srv.env
    command, config, cwd = [SHOPCAST], CONFIG, None
    if tree is not None:
        # Its own code (the working directory comes first on sys.path) and its own config file.
        env.update(PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
        command = [sys.executable, "-m", "shopcast.cli"]
        config, cwd = Path(tree) / "shopcast.toml", tree
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*command, "serve", "--config", str(config)], env=env, stdout=log, stderr=log, cwd=cwd
    )
    http = f"http://127.0.0.1:{srv.http_port}"
    try:
        asyncio.run(wait_http(http, proc))
        yield http, f"rtmp://127.0.0.1:{srv.rtmp_port}/live"
    finally:
        proc.kill()
        proc.wait()
        log.close()


@pytest.fixture(scope="module")
def passthrough_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with origin_process(tmp_path_factory.mktemp("origin")) as origin:
        yield origin


async def wait_http(base: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, "shopcast serve exited"
            try:
                async with http.get(f"{base}/metrics") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, "shopcast serve did not come up"
            await asyncio.sleep(0.1)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat: the whole machine, ffmpeg included."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run_step(
    http: str, rtmp: str, source: Path, count: int, protocol: str = "rtmp"
) -> dict[str, Any]:
    """One load step; ``protocol="srt"`` publishes the same source as MPEG-TS over SRT."""
    options = LoadTestOptions(
        target=http,
        rtmp=[rtmp] if protocol == "rtmp" else [],
        protocol=protocol,
        api_token=TOKEN,
        publishers=count,
        duration=STEP_SECONDS,
        source=source,
        warm_up=2.0,
        progress=False,
    )
    busy0, total0 = machine_busy()
    try:
        report, _ = asyncio.run(run_load(options, out=io.StringIO()))
    except RuntimeError as exc:  # e.g. streams not live in time: the server is past its limit
        return {"publishers": count, "verdict": f"setup failed: {str(exc)[:160]}"}
    busy1, total1 = machine_busy()
    tp = report["target_process"]
    lateness = tp.get("part_lateness") or {}
    publishers = report["load"]["publishers"]
    expected_parts = count * report["duration_s"]["achieved"] / PART_TARGET
    step = {
        "publishers": count,
        "server_cpu_cores": tp.get("cpu_cores"),
        "machine_busy_cores": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2),
        "hub_dropped_frames": tp.get("hub_dropped_frames"),
        "parts_published": tp.get("parts_published"),
        "parts_expected": round(expected_parts),
        "lateness_p50_ms": lateness.get("p50_ms"),
        "lateness_p95_ms": lateness.get("p95_ms"),
        "lateness_p99_ms": lateness.get("p99_ms"),
        "publisher_exits": publishers["exits"],
    }
    reasons = []
    if "error" in tp:
        reasons.append("the target's /metrics did not answer (overloaded)")
    if step["hub_dropped_frames"]:
        reasons.append("hub dropped frames")
    if lateness.get("p95_ms") is None or lateness["p95_ms"] > PART_TARGET * 1000:
        reasons.append("lateness p95 over one part target")
    if publishers["exits"] or publishers["running_at_end"] != count:
        reasons.append("a publisher fell off")
    if (step["parts_published"] or 0) < 0.8 * expected_parts:
        reasons.append("parts published fell behind real time")
    step["verdict"] = "ok" if not reasons else "; ".join(reasons)
    return step


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")
def test_bench_publishers_per_core_passthrough(
    benchmark: Any, recorded_flv: Path, passthrough_origin: tuple[str, str], capsys: Any
) -> None:
    http, rtmp = passthrough_origin
    steps: list[dict[str, Any]] = []

    def step(count: int) -> bool:
        result = run_step(http, rtmp, recorded_flv, count)
        steps.append(result)
        with capsys.disabled():
            print(f"\n{count} publisher(s): {result}")
        return bool(result["verdict"] == "ok")

    def search() -> int:
        held = 0
        for count in STEPS:  # doubling …
            if not step(count):
                # … then one step half way back, when the gap is wide.
                middle = (held + count) // 2
                if held and count - held > 2 and step(middle):
                    held = middle
                break
            held = count
        return held

    held = benchmark.pedantic(search, rounds=1, iterations=1)
    assert steps and steps[0].get("parts_published"), f"no part published at all: {steps[0]}"
    best = next((s for s in steps if s["publishers"] == held), None)
    cores = (best or {}).get("server_cpu_cores") or 0.0
    per_core = held / cores if cores else None
    lines = [
        f"\npublishers in passthrough ({SIZE} {FPS} fps, -c copy; {STEP_SECONDS:.0f} s per step;"
        f" limit: no hub drop, part lateness p95 ≤ {PART_TARGET * 1000:.0f} ms)",
        f"{'N':>4}{'server cores':>14}{'machine cores':>15}{'late p50':>10}{'late p95':>10}"
        f"{'dropped':>9}{'parts':>8}{'expected':>10}  verdict",
    ]
    for s in steps:
        if "server_cpu_cores" not in s:
            lines.append(f"{s['publishers']:>4}  {s['verdict']}")
            continue
        lines.append(
            f"{s['publishers']:>4}{s['server_cpu_cores']!s:>14}{s['machine_busy_cores']!s:>15}"
            f"{s['lateness_p50_ms']!s:>10}{s['lateness_p95_ms']!s:>10}"
            f"{s['hub_dropped_frames']!s:>9}{s['parts_published']!s:>8}{s['parts_expected']:>10}"
            f"  {s['verdict']}"
        )
    ceiling = "" if held < max(s["publishers"] for s in steps) else " (the largest step; no limit)"
    lines.append(
        f"held: {held} publisher(s){ceiling}; server CPU there {cores} cores"
        + (f" → ≈ {per_core:.0f} publishers per server core" if per_core else "")
    )
    benchmark.extra_info.update(
        held=held,
        limit_found=not ceiling,
        server_cpu_cores_at_held=cores,
        publishers_per_server_core=round(per_core, 1) if per_core else None,
        steps=steps,
        summary={
            "ratio": None,
            "reference": "none: an absolute capacity (passthrough, no transcoding)",
            "value": f"{held} real-time 360p publishers{ceiling} at {cores} server cores"
            + (f" ≈ {per_core:.0f}/core" if per_core else ""),
        },
    )
    with capsys.disabled():
        print("\n".join(lines))


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")
@pytest.mark.skipif(BASELINE_TREE is None, reason="SHOPCAST_BENCH_BASELINE_TREE not set")
def test_bench_passthrough_cpu_against_baseline(
    benchmark: Any, recorded_flv: Path, tmp_path: Path, capsys: Any
) -> None:
    """Server CPU per passthrough publisher, this tree / the baseline tree, same publishers."""
    assert BASELINE_TREE is not None
    per_publisher: dict[str, list[float]] = {"baseline": [], "this": []}
    with (
        origin_process(tmp_path / "baseline", BASELINE_TREE) as baseline,
        origin_process(tmp_path / "this") as this,
    ):
        origins = {"baseline": baseline, "this": this}

        def rounds() -> None:
            for n in range(COMPARE_ROUNDS):
                # A B A B …, each round started by the other one.
                for name in ("baseline", "this") if n % 2 == 0 else ("this", "baseline"):
                    step = run_step(*origins[name], recorded_flv, COMPARE_PUBLISHERS)
                    with capsys.disabled():
                        print(f"\nround {n + 1} {name}: {step}")
                    cores = step.get("server_cpu_cores")
                    assert step["verdict"] == "ok" and cores, f"{name} did not keep up: {step}"
                    per_publisher[name].append(cores / COMPARE_PUBLISHERS)

        benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratios = [t / b for t, b in zip(per_publisher["this"], per_publisher["baseline"], strict=True)]
    median = statistics.median(ratios)
    line = (
        f"server CPU per passthrough publisher ({COMPARE_PUBLISHERS} publishers, {SIZE} {FPS} fps,"
        f" {COMPARE_ROUNDS} interleaved rounds): this tree / baseline median {median:.3f}x"
        f" (min {min(ratios):.3f}, max {max(ratios):.3f}); medians"
        f" {statistics.median(per_publisher['this']) * 1000:.1f} vs"
        f" {statistics.median(per_publisher['baseline']) * 1000:.1f} ms per publisher-second"
    )
    benchmark.extra_info.update(
        per_publisher_cores=per_publisher,
        ratios=ratios,
        summary={
            "ratio": round(median, 3),
            "reference": f"the baseline tree {BASELINE_TREE}, same publishers, same run",
            "value": line,
        },
    )
    with capsys.disabled():
        print("\n" + line)


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")
def test_bench_srt_vs_rtmp_passthrough_cpu(
    benchmark: Any, recorded_flv: Path, passthrough_origin: tuple[str, str], capsys: Any
) -> None:
    """Server CPU per passthrough publisher over SRT (libsrt, MPEG-TS demuxer) / over RTMP: the
    same recorded source, the same origin process, rounds interleaved."""
    per_publisher: dict[str, list[float]] = {"rtmp": [], "srt": []}
    rounds = 1 if SMOKE else COMPARE_ROUNDS

    def interleaved() -> None:
        for n in range(rounds):
            for protocol in ("rtmp", "srt") if n % 2 == 0 else ("srt", "rtmp"):
                step = run_step(*passthrough_origin, recorded_flv, COMPARE_PUBLISHERS, protocol)
                with capsys.disabled():
                    print(f"\nround {n + 1} {protocol}: {step}")
                cores = step.get("server_cpu_cores")
                assert step["verdict"] == "ok" and cores, f"{protocol} did not keep up: {step}"
                per_publisher[protocol].append(cores / COMPARE_PUBLISHERS)

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    ratios = [s / r for s, r in zip(per_publisher["srt"], per_publisher["rtmp"], strict=True)]
    median = statistics.median(ratios)
    srt, rtmp = (statistics.median(per_publisher[p]) for p in ("srt", "rtmp"))
    line = (
        f"server CPU per passthrough publisher ({COMPARE_PUBLISHERS} publishers, {SIZE} {FPS} fps,"
        f" {rounds} interleaved round(s)): SRT / RTMP median {median:.3f}x; {srt * 1000:.1f} vs"
        f" {rtmp * 1000:.1f} ms per publisher-second ≈ {1 / srt:.0f} vs {1 / rtmp:.0f}"
        " publishers per server core"
    )
    benchmark.extra_info.update(
        per_publisher_cores=per_publisher,
        ratios=ratios,
        srt_publishers_per_core=round(1 / srt, 1),
        rtmp_publishers_per_core=round(1 / rtmp, 1),
        summary={
            "ratio": round(median, 3),
            "reference": "the same publishers over RTMP, same origin, same run",
            "value": line,
        },
    )
    with capsys.disabled():
        print("\n" + line)


STORM = 20 if SMOKE else 500  # the storm: 500 at once, all live within 10 s


async def connect_storm(http: str, rtmp: str, count: int, label: str) -> dict[str, Any]:
    """``count`` light RTMP publishers (no ffmpeg, no media) connecting at once to streams made
    for them: how many reach ``NetStream.Publish.Start``, and when the last one does."""
    keys = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for n in range(count):
            body = {"id": f"storm-{label}-{n}"}
            async with api.post(f"{http}/api/v1/streams", json=body) as r:
                assert r.status == 201, await r.text()
                keys.append((await r.json())["stream_key"])
    host, _, rest = rtmp.removeprefix("rtmp://").partition(":")
    port, _, app = rest.partition("/")
    publishers = [RTMPPublisher(host, int(port), app, key) for key in keys]
    started = time.perf_counter()

    async def connect(publisher: RTMPPublisher) -> float:
        await publisher.connect(timeout=30)
        return time.perf_counter() - started

    results = await asyncio.gather(*(connect(p) for p in publishers), return_exceptions=True)
    for publisher in publishers:
        with contextlib.suppress(Exception):
            await publisher.close()
    live = sorted(r for r in results if isinstance(r, float))
    return {
        "publishers": count,
        "live": len(live),
        "last_start_s": round(live[-1], 3) if live else None,
        "median_start_s": round(statistics.median(live), 3) if live else None,
        "errors": sorted({str(r)[:120] for r in results if not isinstance(r, float)}),
    }


def test_bench_connect_storm(
    benchmark: Any, passthrough_origin: tuple[str, str], tmp_path: Path, capsys: Any
) -> None:
    """N publishers at once → all live, time to the last ``Publish.Start``; against the
    baseline tree (same run, rounds interleaved) when ``SHOPCAST_BENCH_BASELINE_TREE`` is set."""
    runs: dict[str, list[dict[str, Any]]] = {"this": []}
    with contextlib.ExitStack() as stack:
        origins = {"this": passthrough_origin}
        if BASELINE_TREE is not None:
            origins["baseline"] = stack.enter_context(
                origin_process(tmp_path / "baseline", BASELINE_TREE)
            )
            runs["baseline"] = []
        rounds = 1 if SMOKE else 3

        def storms() -> None:
            for n in range(rounds):
                for name in sorted(origins, reverse=n % 2 == 1):
                    result = asyncio.run(connect_storm(*origins[name], STORM, f"{name}{n}"))
                    runs[name].append(result)
                    with capsys.disabled():
                        print(f"\nstorm round {n + 1} {name}: {result}")

        benchmark.pedantic(storms, rounds=1, iterations=1)
    mine = runs["this"]
    assert all(r["live"] == STORM for r in mine), mine
    last = statistics.median(r["last_start_s"] for r in mine)
    ratio = None
    if "baseline" in runs:
        base = [r["last_start_s"] or float("inf") for r in runs["baseline"]]
        ratio = round(last / statistics.median(base), 3)
    line = (
        f"connect storm: {STORM} light RTMP publishers at once, all live; last Publish.Start"
        f" after {last * 1000:.0f} ms (median of {len(mine)})"
        + (f"; this / baseline {ratio}x" if ratio is not None else "")
    )
    benchmark.extra_info.update(
        storms=runs,
        summary={
            "ratio": ratio,
            "reference": (
                f"the baseline tree {BASELINE_TREE}, same storm, same run"
                if ratio is not None
                else "none: an absolute figure"
            ),
            "value": line,
        },
    )
    with capsys.disabled():
        print("\n" + line)
