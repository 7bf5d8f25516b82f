"""Each benchmark module runs at a tiny size (``SHOPCAST_BENCH_SMOKE=1``) and leaves a well-formed
report. Left out: the player latency benchmark (a browser needs a minute; it skips itself in smoke
mode)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness.postgres import server_bin

ROOT = Path(__file__).parents[2]
MICRO_ARGS = ["--benchmark-max-time=0.02", "--benchmark-min-rounds=3", "--benchmark-warmup=off"]
#: case → (modules, -k expression, fewest benchmark records, needs ffmpeg)
CASES: dict[str, tuple[list[str], str | None, int, bool]] = {
    "micro": (
        [
            "test_bench_chunk_reader.py",
            "test_bench_fmp4.py",
            "test_bench_amf0.py",
            "test_bench_playlist.py",
            "test_bench_timed_metadata.py",
            "test_bench_mpegts.py",
        ],
        None,
        12,  # without the native twins: 4 + 2 + 4 + 3 + 1 pure-Python ones … at least 12
        False,
    ),
    "transcode": (["test_bench_transcode.py"], "ffmpeg_cli or source-no-bframes", 2, True),
    "source_codecs": (["test_bench_source_codecs.py"], None, 1, True),
    "latency": (["test_bench_latency.py"], "server_added", 1, True),
    "tags": (["test_bench_tags.py"], None, 2, True),
    "publishers": (["test_bench_publishers.py"], None, 1, True),
    "edge": (["test_bench_edge.py"], None, 1, True),
    "whip": (["test_bench_whip.py"], None, 2, False),
    "replay": (["test_bench_replay.py"], None, 4, False),
    "continuity": (["test_bench_continuity.py"], None, 1, True),
    "clips": (["test_bench_clips.py"], None, 1, True),
    "recording": (["test_bench_recording.py"], None, 1, True),
    "cluster": (["test_bench_cluster.py"], None, 1, True),
}
#: Cases that also need Debian's PostgreSQL server.
NEEDS_POSTGRES = {"cluster"}
MACHINE_KEYS = {"cpu", "cores", "python", "pyav", "pyav_x264", "ffmpeg_cli", "hls_js"}


@pytest.mark.parametrize("case", CASES)
def test_benchmark_module_smoke(case: str, tmp_path: Path) -> None:
    modules, keyword, fewest, needs_ffmpeg = CASES[case]
    if needs_ffmpeg and shutil.which("ffmpeg") is None:
        pytest.skip("Debian ffmpeg not installed")
    if case in NEEDS_POSTGRES and server_bin() is None:
        pytest.skip("Debian postgresql not installed")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only"]
    cmd += [f"benchmarks/{m}" for m in modules] + MICRO_ARGS
    if keyword:
        cmd += ["-k", keyword]
    env = dict(os.environ, SHOPCAST_BENCH_SMOKE="1", SHOPCAST_BENCH_REPORT_DIR=str(tmp_path))
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["smoke"] is True
    assert set(report["machine"]) >= MACHINE_KEYS, report["machine"]
    records = report["benchmarks"]
    assert len(records) >= fewest, [r["test"] for r in records]
    for record in records:
        assert record["outcome"] == "passed", record
        assert record["module"].removeprefix("benchmarks/") in modules
        assert record["extra_info"], record
    markdown = (tmp_path / "latest.md").read_text()
    assert markdown.startswith("# shopcast benchmarks")
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(rows) == len(records)
    assert all(line.count("|") >= 6 for line in rows)
