"""Publishers per core in passthrough mode: how many real-time RTMP publishers one origin core
holds with LL-HLS packaging (``shopcast serve``, ``SHOPCAST_TRANSCODE_RUNGS=""``, passthrough on:
a 9:16 H.264 source is packaged as it comes, audio included) and with the ingest path alone.

The origin is pinned to core 0 with ``taskset``; the publishers come from one light asyncio
replayer process pinned to core 1 (``benchmarks/harness/rtmp_replayer.py``: the project's own
RTMP client role, no ffmpeg per publisher) replaying one recorded 600 kb/s 360×640 30 fps FLV
(1 s GOP, AAC) in real time, connects spread at 100 per second. Each step starts a fresh
origin, connects N publishers, waits a warm-up, then measures ``STEP_SECONDS``: the origin's
CPU (``/proc/<pid>/stat``), hub drops, each stream's parts and the part lateness (last frame of
a part in → part listed, the server's histogram). A step holds when every publisher went live
and stayed, no hub drop, no stream's parts behind real time (≥ 90 % of the window's parts),
no publisher's socket backed up (the origin not reading in time) and lateness p95 ≤ one part
target. The generator must not be the limit: its own CPU and its send lag (how late the oldest
due message went out) are reported per step, and a step where the generator was saturated is
marked so, not counted as the origin's limit.

The ingest-only figure runs ``benchmarks/harness/ingest_origin.py`` instead: the same RTMP
server, stream registry and hub with one reader draining it, no packaging and no HTTP.

Each figure is also measured, in the same run and rounds interleaved, for the pure-Python build
(``SHOPCAST_NO_EXTENSIONS=1``) and, with ``SHOPCAST_BENCH_BASELINE_TREE`` set to an older
checkout (``git worktree add --detach <dir> <commit>``, its ``native/*.so`` built), for that
tree (this venv's Python, ``PYTHONPATH`` the tree); ratios are this / the other.

The connect-storm benchmark makes ``STORM`` streams and connects as many light RTMP publishers
(``ingest.rtmp.client``, no media) at once: all must go live; the figure is the time to the
last ``NetStream.Publish.Start``, against the same references.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, free_port, serve_env
from benchmarks.loadtest.options import LoadTestOptions
from benchmarks.loadtest.prometheus import MetricsSnapshot, metrics_delta
from benchmarks.loadtest.run import run_load
from ingest.rtmp.client import RTMPPublisher

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
FFMPEG = shutil.which("ffmpeg")
TASKSET = shutil.which("taskset") if (os.cpu_count() or 1) >= 2 else None
ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "shopcast.toml"
REPLAYER = ROOT / "benchmarks/harness/rtmp_replayer.py"
INGEST_ORIGIN = ROOT / "benchmarks/harness/ingest_origin.py"
TOKEN = "bench-publishers-token"
SIZE, FPS, VIDEO_RATE = "360x640", 30, "600k"
SOURCE_SECONDS = 3 if SMOKE else 10
#: Held-search steps; ``SHOPCAST_BENCH_PUBLISHER_STEPS="300,400,500"`` runs chosen ones only.
STEPS = tuple(
    int(n)
    for n in os.environ.get(
        "SHOPCAST_BENCH_PUBLISHER_STEPS",
        "2" if SMOKE else "50,100,200,300,400,500,750,1000,1300",
    ).split(",")
)
#: Below the first step for the references, which may not hold 50 (an older tree, pure Python).
LOW_STEPS = () if SMOKE or "SHOPCAST_BENCH_PUBLISHER_STEPS" in os.environ else (10, 25)
STEP_SECONDS = 2.0 if SMOKE else 15.0
WARM_UP = 1.5 if SMOKE else 4.0
CONNECTS_PER_SECOND = 100.0
#: Every build packages at this part target (shopcast.toml's unless ``SHOPCAST_BENCH_PART_TARGET``),
#: so an older tree with another default is compared like with like.
PART_TARGET = float(
    os.environ.get("SHOPCAST_BENCH_PART_TARGET")
    or tomllib.loads(CONFIG.read_text())["packager"]["part_target"]
)
ORIGIN_CORE, GENERATOR_CORE = "0", "1"
BASELINE_TREE = os.environ.get("SHOPCAST_BENCH_BASELINE_TREE")
COMPARE_PUBLISHERS = 2 if SMOKE else 8
COMPARE_ROUNDS = 5  # SRT vs RTMP rounds (one at smoke size)


@dataclass(frozen=True)
class Build:
    """What runs the origin: a checkout (None: this one) and extra environment."""

    name: str
    tree: str | None = None
    env: tuple[tuple[str, str], ...] = ()


THIS = Build("this")
BUILDS = [THIS]
if not SMOKE:  # the smoke run (make test's 150 s per module) measures this build alone
    BUILDS.append(Build("pure_python", env=(("SHOPCAST_NO_EXTENSIONS", "1"),)))
if BASELINE_TREE is not None:
    BUILDS.append(Build("baseline", tree=BASELINE_TREE))


def pinned(core: str) -> list[str]:
    """``taskset -c core`` when the machine has two cores and taskset; else nothing."""
    return [TASKSET, "-c", core] if TASKSET else []


@pytest.fixture(scope="module")
def recorded_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone-like vertical publish, encoded once: 360×640 30 fps H.264 (1 s GOP) + AAC."""
    assert FFMPEG is not None
    path = tmp_path_factory.mktemp("publishers") / "recorded.flv"
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={FPS}"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SOURCE_SECONDS)]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-b:v", VIDEO_RATE, "-maxrate", VIDEO_RATE]
    cmd += ["-bufsize", "1200k", "-pix_fmt", "yuv420p"]
    cmd += ["-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-bf", "0"]
    subprocess.run([*cmd, "-c:a", "aac", "-b:a", "64k", str(path)], check=True)
    return path


@contextlib.contextmanager
def origin_process(
    folder: Path, tree: str | None = None, env_extra: dict[str, str] | None = None, core: str = ""
) -> Iterator[tuple[str, str, int]]:
    """``shopcast serve``, passthrough only, on free 127.0.0.1 ports: (HTTP base, RTMP base,
    pid); from the checkout ``tree`` when given, pinned to ``core`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    srv = serve_env(
        folder,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_TRANSCODE_RUNGS="",  # no encoded rungs: LadderConfig accepts it with passthrough
        SHOPCAST_TRANSCODE_PASSTHROUGH="true",
        SHOPCAST_LOG_LEVEL="WARNING",
        SHOPCAST_PACKAGER_PART_TARGET=str(PART_TARGET),
    )
    env = srv.env
    env.update(env_extra or {})
    command, config, cwd = [SHOPCAST], CONFIG, None
    if tree is not None:
        # Its own code (the working directory comes first on sys.path) and its own config file.
        env.update(PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
        command = [sys.executable, "-m", "shopcast.cli"]
        config, cwd = Path(tree) / "shopcast.toml", tree
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*(pinned(core) if core else []), *command, "serve", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=log,
        cwd=cwd,
    )
    http = f"http://127.0.0.1:{srv.http_port}"
    try:
        asyncio.run(wait_http(http, proc))
        yield http, f"rtmp://127.0.0.1:{srv.rtmp_port}/live", proc.pid
    finally:
        proc.kill()
        proc.wait()
        log.close()


def build_origin(folder: Path, build: Build, core: str = "", **env: str) -> Any:
    return origin_process(folder, build.tree, {**dict(build.env), **env}, core)


@pytest.fixture(scope="module")
def passthrough_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with origin_process(tmp_path_factory.mktemp("origin")) as (http, rtmp, _):
        yield http, rtmp


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
    """(busy, total) jiffies of all CPUs from /proc/stat: the whole machine, generator included."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# -- one step: a fresh origin, N replayed publishers ----------------------------------------------


class ReplayerProcess:
    """The replayer, pinned to the generator core: ``live`` when every publisher connected."""

    def __init__(self, rtmp: str, keys: list[str], source: Path, folder: Path) -> None:
        host, _, rest = rtmp.removeprefix("rtmp://").partition(":")
        port, _, app = rest.partition("/")
        keys_file = folder / "keys.txt"
        keys_file.write_text("\n".join(keys))
        command = [sys.executable, "-m", "benchmarks.harness.rtmp_replayer", "--port", port]
        command += ["--host", host, "--app", app, "--keys", str(keys_file)]
        command += ["--source", str(source), "--ramp", str(len(keys) / CONNECTS_PER_SECOND)]
        self.proc = subprocess.Popen(
            [*pinned(GENERATOR_CORE), *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(folder / "replayer.log").open("wb"),
            cwd=ROOT,
        )

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()

    def _say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{word}\n".encode())
        self.proc.stdin.flush()

    def live(self) -> tuple[int, int, float]:
        """(connected, failed, seconds to the last ``Publish.Start``)."""
        words = self._line().split()
        assert words and words[0] == "live", f"replayer: {words}"
        return int(words[1]), int(words[2]), float(words[3])

    def mark(self) -> None:
        self._say("mark")

    def stop(self) -> dict[str, Any]:
        self._say("stop")
        report: dict[str, Any] = json.loads(self._line() or "{}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return report


@contextlib.contextmanager
def ingest_origin(build: Build, core: str = "") -> Iterator[tuple[str, int, IO[bytes], IO[bytes]]]:
    """The ingest path alone (``ingest_origin.py``) of ``build``: (RTMP base, pid, its stdin
    and stdout)."""
    port = free_port()
    env = {**os.environ, **dict(build.env), "PYTHONPATH": build.tree or str(ROOT)}
    proc = subprocess.Popen(
        [*(pinned(core) if core else []), sys.executable, "-P", str(INGEST_ORIGIN), str(port)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=build.tree or ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == b"listening", "ingest origin did not start"
        yield f"rtmp://127.0.0.1:{port}/live", proc.pid, proc.stdin, proc.stdout
    finally:
        proc.kill()
        proc.wait()


def ingest_report(stdin: IO[bytes], stdout: IO[bytes]) -> dict[str, Any]:
    stdin.write(b"report\n")
    stdin.flush()
    report: dict[str, Any] = json.loads(stdout.readline())
    return report


async def create_streams(http: str, count: int) -> list[tuple[str, str]]:
    """(stream id, key) of ``count`` new streams."""
    made = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as api:
        for n in range(count):
            async with api.post(f"{http}/api/v1/streams", json={"id": f"pub-{n}"}) as r:
                assert r.status == 201, await r.text()
                made.append((f"pub-{n}", (await r.json())["stream_key"]))
    return made


async def scrape(http: str) -> MetricsSnapshot:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{http}/metrics", timeout=timeout) as r,
    ):
        return MetricsSnapshot.parse(await r.text(), time.monotonic())


def replay_step(
    build: Build, mode: str, count: int, source: Path, folder: Path, **env: str
) -> dict[str, Any]:
    """One step: a fresh origin of ``build`` (``mode`` "packaging" or "ingest"), ``count``
    replayed publishers, ``STEP_SECONDS`` measured."""
    folder.mkdir(parents=True, exist_ok=True)
    step: dict[str, Any] = {"build": build.name, "mode": mode, "publishers": count}
    step["load_average"] = load_average()
    with contextlib.ExitStack() as stack:
        if mode == "packaging":
            http, rtmp, pid = stack.enter_context(build_origin(folder, build, ORIGIN_CORE, **env))
            streams = asyncio.run(create_streams(http, count))
            keys = [key for _, key in streams]
        else:
            rtmp, pid, stdin, stdout = stack.enter_context(ingest_origin(build, ORIGIN_CORE))
            keys = [f"ingest-{n}" for n in range(count)]
        replayer = ReplayerProcess(rtmp, keys, source, folder)
        try:
            connected, failed, last_start = replayer.live()
            step.update(connected=connected, connect_failed=failed, last_start_s=last_start)
            time.sleep(WARM_UP)
            if mode == "packaging":
                before = asyncio.run(scrape(http))
            else:
                dropped_before = ingest_report(stdin, stdout)["hub_dropped"]
            busy0, total0 = machine_busy()
            cpu0, wall0 = process_cpu(pid), time.monotonic()
            replayer.mark()
            time.sleep(STEP_SECONDS)
            cpu1, wall1 = process_cpu(pid), time.monotonic()
            busy1, total1 = machine_busy()
            if mode == "packaging":
                after = asyncio.run(scrape(http))
            else:
                ingest = ingest_report(stdin, stdout)
        finally:
            generator = replayer.stop()
    wall = wall1 - wall0
    step["origin_cores"] = round((cpu1 - cpu0) / wall, 3)
    step["ms_per_publisher_second"] = round((cpu1 - cpu0) / wall / count * 1000, 2)
    if generator.get("messages_per_s"):  # robust to publishers lost on the way
        step["us_per_message"] = round((cpu1 - cpu0) / wall / generator["messages_per_s"] * 1e6, 2)
    step["machine_busy_cores"] = round(
        (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2
    )
    step["generator"] = generator
    reasons = []
    if failed or connected != count:
        reasons.append(f"{failed} publisher(s) not live")
    if generator.get("closed"):
        reasons.append(f"{generator['closed']} publisher(s) dropped")
    if generator.get("behind"):
        reasons.append(f"{generator['behind']} publisher(s) backed up (origin not reading)")
    if mode == "packaging":
        delta = metrics_delta(before, after, [s for s, _ in streams])
        lateness = delta.get("part_lateness") or {}
        step.update(
            hub_dropped_frames=delta["hub_dropped_frames"],
            lateness_p50_ms=lateness.get("p50_ms"),
            lateness_p95_ms=lateness.get("p95_ms"),
        )
        per_stream: dict[str, float] = {}
        for (stream, _), value in after.parts.items():
            parts = value - before.parts.get((stream, _), 0.0)
            per_stream[stream] = min(per_stream.get(stream, parts), parts)
        expected = (after.at - before.at) / PART_TARGET
        slow = sum(1 for s, _ in streams if per_stream.get(s, 0.0) < 0.9 * expected)
        step["streams_behind"] = slow
        if delta["hub_dropped_frames"]:
            reasons.append("hub dropped frames")
        if slow:
            reasons.append(f"{slow} stream(s) behind real time")
        if lateness.get("p95_ms") is None or lateness["p95_ms"] > PART_TARGET * 1000:
            reasons.append("lateness p95 over one part target")
    else:
        step["hub_dropped_frames"] = ingest["hub_dropped"] - dropped_before
        if step["hub_dropped_frames"]:
            reasons.append("hub dropped frames")
        if ingest["live"] != count:
            reasons.append(f"{count - ingest['live']} session(s) not live")
    # Saturated (its core), late (p95), or stalled once past the origin's gap_timeout (1 s: the
    # origin then rightly drops that publisher): the step says nothing about the origin.
    generator_limited = (
        (generator.get("cpu_cores") or 0) > 0.9
        or (generator.get("send_lag_p95_ms") or 0) > 100
        or (generator.get("send_lag_max_ms") or 0) > 900
    )
    if generator_limited:
        step["generator_limited"] = True
    step["verdict"] = "ok" if not reasons else "; ".join(reasons)
    if reasons and generator_limited:
        step["verdict"] += " (generator saturated: inconclusive)"
    return step


def held_search(
    builds: list[Build], mode: str, source: Path, folder: Path, print_line: Any
) -> dict[str, list[dict[str, Any]]]:
    """Steps in order for every build, interleaved step by step (A B C, then B C A …); a build
    stops at its first failed step."""
    steps: dict[str, list[dict[str, Any]]] = {b.name: [] for b in builds}
    running = list(builds)
    references = [b for b in builds if b is not THIS]
    for n, count in enumerate((*LOW_STEPS, *STEPS)):
        todo = [b for b in running if count in STEPS or b in references]
        todo = todo[n % len(todo) :] + todo[: n % len(todo)] if todo else []
        for build in todo:
            try:
                step = replay_step(build, mode, count, source, folder / f"{build.name}-{count}")
            except (AssertionError, OSError, ValueError, aiohttp.ClientError) as exc:
                # Past its limit an origin may not even answer; that is the step's verdict.
                step = {"build": build.name, "mode": mode, "publishers": count}
                step["verdict"] = f"setup failed: {str(exc)[:160]}"
            steps[build.name].append(step)
            print_line(f"{mode} {build.name} {count}: {json.dumps(step)}")
            if step["verdict"] != "ok":
                running.remove(build)
        if not running:
            break
    return steps


def held(steps: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    """The largest step that held (every smaller one held too) and its record."""
    best: dict[str, Any] | None = None
    for step in steps:
        if step["verdict"] != "ok":
            break
        best = step
    return (best["publishers"] if best else 0), best


def per_core(step: dict[str, Any] | None) -> float | None:
    """Publishers per origin core at a held step: N / the origin's cores there."""
    if not step or not step.get("origin_cores"):
        return None
    return round(float(step["publishers"]) / float(step["origin_cores"]), 1)


def summarize(
    benchmark: Any, mode: str, steps: dict[str, list[dict[str, Any]]], print_line: Any
) -> None:
    """Held N, publishers per core and CPU per publisher-second per build; ratios to this."""
    table: dict[str, dict[str, Any]] = {}
    for name, runs in steps.items():
        count, best = held(runs)
        table[name] = {
            "held": count,
            "origin_cores_at_held": best and best["origin_cores"],
            "publishers_per_core": per_core(best),
            "ms_per_publisher_second_at_held": best and best["ms_per_publisher_second"],
            "limit_found": any(s["verdict"] != "ok" for s in runs),
        }
    mine = table["this"]
    for name, row in table.items():
        if name != "this" and row["held"] and mine["held"]:
            row["held_ratio_this_over"] = round(mine["held"] / row["held"], 2)
        # CPU per publisher-second at the largest step both held: the finer ratio.
        both = {s["publishers"] for s in steps[name] if s["verdict"] == "ok"} & {
            s["publishers"] for s in steps["this"] if s["verdict"] == "ok"
        }
        if name != "this" and both:
            at = max(both)
            cost = {
                b: next(s for s in steps[b] if s["publishers"] == at)["ms_per_publisher_second"]
                for b in (name, "this")
            }
            row["cpu_ratio_this_over"] = round(cost["this"] / cost[name], 3)
            row["cpu_ratio_at"] = at
    lines = [f"\n{mode}: publishers held per build (origin pinned to one core)"]
    for name, row in table.items():
        lines.append(f"  {name}: {json.dumps(row)}")
    for line in lines:
        print_line(line)
    ratio = None
    if "baseline" in table and table["baseline"].get("cpu_ratio_this_over"):
        ratio = table["baseline"]["cpu_ratio_this_over"]
    benchmark.extra_info.update(
        builds=table,
        steps=steps,
        summary={
            "ratio": ratio,
            "reference": "origin CPU per publisher-second, this / the baseline tree at the"
            " largest step both held (same run)"
            if ratio is not None
            else "none: an absolute capacity (no baseline tree set)",
            "value": f"{mode}: this held {mine['held']}"
            + ("" if mine["limit_found"] else " (the largest step; no limit)")
            + f" at {mine['origin_cores_at_held']} origin cores"
            + f" ≈ {mine['publishers_per_core']}/core",
        },
    )


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")
@pytest.mark.timeout(3600)  # every build's steps up to 1,000 publishers: half an hour or more
@pytest.mark.parametrize("mode", ["packaging", "ingest"])
def test_bench_publishers_per_core_replayed(
    benchmark: Any, recorded_flv: Path, tmp_path: Path, capsys: Any, mode: str
) -> None:
    """Held publishers per origin core, packaging or ingest only, this build against the
    references, steps interleaved."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(line)

    steps = benchmark.pedantic(
        held_search, args=(BUILDS, mode, recorded_flv, tmp_path, say), rounds=1, iterations=1
    )
    first = steps["this"][0]
    assert first.get("connected") == first["publishers"], f"publishers did not go live: {first}"
    summarize(benchmark, mode, steps, say)


CPU_PUBLISHERS = 2 if SMOKE else 100
CPU_ROUNDS = 1 if SMOKE else 3


@pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg CLI not installed")
@pytest.mark.timeout(1800)
def test_bench_passthrough_cpu_per_publisher(
    benchmark: Any, recorded_flv: Path, tmp_path: Path, capsys: Any
) -> None:
    """Origin CPU per publisher-second (and per message), packaging, ``CPU_PUBLISHERS``
    replayed publishers, builds interleaved round by round: the ratio this / each reference.
    CPU time holds up on a loaded machine where a held-publishers search does not (a starved
    origin misses gap_timeout), so the gap is raised here: every publisher stays and counts."""
    per_build: dict[str, list[dict[str, Any]]] = {b.name: [] for b in BUILDS}

    def rounds() -> None:
        for n in range(CPU_ROUNDS):
            order = BUILDS[n % len(BUILDS) :] + BUILDS[: n % len(BUILDS)]
            for build in order:
                step = replay_step(
                    build,
                    "packaging",
                    CPU_PUBLISHERS,
                    recorded_flv,
                    tmp_path / f"{build.name}-{n}",
                    SHOPCAST_CONTINUITY_GAP_TIMEOUT="30",
                )
                per_build[build.name].append(step)
                with capsys.disabled():
                    print(f"\ncpu round {n + 1} {build.name}: {json.dumps(step)}")

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    mine = per_build["this"]
    assert all(s["connected"] == CPU_PUBLISHERS for s in mine), mine

    def cost(step: dict[str, Any]) -> float:
        """ms per publisher-second from CPU per message received: an origin that did not take
        every publisher (an older one, admitting slowly) is charged only for what it got."""
        per_publisher = step["generator"]["messages_per_s"] / step["generator"]["publishers"]
        return float(step["us_per_message"]) * float(per_publisher) / 1000

    medians = {name: statistics.median(cost(s) for s in steps) for name, steps in per_build.items()}
    ratios: dict[str, dict[str, float]] = {}
    for name, steps in per_build.items():
        if name == "this":
            continue
        each = [cost(t) / cost(o) for t, o in zip(mine, steps, strict=True)]
        ratios[name] = {
            "median": round(statistics.median(each), 3),
            "min": round(min(each), 3),
            "max": round(max(each), 3),
        }
    line = (
        f"origin CPU per passthrough publisher-second with packaging ({CPU_PUBLISHERS} replayed"
        f" publishers, {CPU_ROUNDS} interleaved round(s)): this {medians['this']:.2f} ms"
        + "".join(
            f"; {name} {medians[name]:.2f} ms (this / {name} {r['median']}x, {r['min']}–{r['max']})"
            for name, r in ratios.items()
        )
        + f" → ≈ {1000 / medians['this']:.0f} publishers per origin core by CPU"
    )
    benchmark.extra_info.update(
        steps=per_build,
        medians_ms=medians,
        ratios=ratios,
        summary={
            "ratio": (ratios.get("baseline") or ratios.get("pure_python") or {}).get("median"),
            "reference": "the baseline tree, same publishers, same run"
            if "baseline" in ratios
            else "the pure-Python build, same run"
            if ratios
            else "none",
            "value": line,
        },
    )
    with capsys.disabled():
        print("\n" + line)


def run_step(
    http: str, rtmp: str, source: Path, count: int, protocol: str = "rtmp"
) -> dict[str, Any]:
    """One ffmpeg load step (``shopcast loadtest``); ``protocol="srt"`` publishes the same
    source as MPEG-TS over SRT."""
    options = LoadTestOptions(
        target=http,
        rtmp=[rtmp] if protocol == "rtmp" else [],
        protocol=protocol,
        api_token=TOKEN,
        publishers=count,
        duration=4.0 if SMOKE else 20.0,
        source=source,
        warm_up=2.0,
        progress=False,
    )
    try:
        report, _ = asyncio.run(run_load(options, out=io.StringIO()))
    except RuntimeError as exc:  # e.g. streams not live in time: the server is past its limit
        return {"publishers": count, "verdict": f"setup failed: {str(exc)[:160]}"}
    tp = report["target_process"]
    lateness = tp.get("part_lateness") or {}
    publishers = report["load"]["publishers"]
    expected_parts = count * report["duration_s"]["achieved"] / PART_TARGET
    step = {
        "publishers": count,
        "server_cpu_cores": tp.get("cpu_cores"),
        "hub_dropped_frames": tp.get("hub_dropped_frames"),
        "parts_published": tp.get("parts_published"),
        "parts_expected": round(expected_parts),
        "lateness_p95_ms": lateness.get("p95_ms"),
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


def test_bench_connect_storm(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    """N publishers at once → all live, time to the last ``Publish.Start``, the origin pinned to
    one core; against the pure-Python build and the baseline tree (when set), rounds
    interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {b.name: [] for b in BUILDS}
    with contextlib.ExitStack() as stack:
        origins = {
            b.name: stack.enter_context(build_origin(tmp_path / b.name, b, ORIGIN_CORE))
            for b in BUILDS
        }
        rounds = 1 if SMOKE else 3

        def storms() -> None:
            for n in range(rounds):
                names = list(origins)
                for name in names[n % len(names) :] + names[: n % len(names)]:
                    http, rtmp, _ = origins[name]
                    result = asyncio.run(connect_storm(http, rtmp, STORM, f"{name}{n}"))
                    result["load_average"] = load_average()
                    runs[name].append(result)
                    with capsys.disabled():
                        print(f"\nstorm round {n + 1} {name}: {result}")

        benchmark.pedantic(storms, rounds=1, iterations=1)
    mine = runs["this"]
    assert all(r["live"] == STORM for r in mine), mine
    last = statistics.median(r["last_start_s"] for r in mine)
    ratios: dict[str, float] = {}
    for name, results in runs.items():
        if name != "this":
            other = statistics.median(r["last_start_s"] or float("inf") for r in results)
            ratios[name] = round(last / other, 3)
    line = (
        f"connect storm: {STORM} light RTMP publishers at once, all live; last Publish.Start"
        f" after {last * 1000:.0f} ms (median of {len(mine)})"
        + "".join(f"; this / {name} {ratio}x" for name, ratio in ratios.items())
    )
    benchmark.extra_info.update(
        storms=runs,
        ratios=ratios,
        summary={
            "ratio": ratios.get("baseline", ratios.get("pure_python")),
            "reference": (
                f"the baseline tree {BASELINE_TREE}, same storm, same run"
                if "baseline" in ratios
                else "the pure-Python build, same storm, same run"
                if ratios
                else "none: an absolute figure"
            ),
            "value": line,
        },
    )
    with capsys.disabled():
        print("\n" + line)
