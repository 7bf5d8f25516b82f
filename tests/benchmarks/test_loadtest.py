"""``shopcast loadtest``: its pure parts, and a few seconds against a local ``shopcast serve``."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness.serve_env import SHOPCAST, serve_env
from benchmarks.loadtest.options import LoadTestOptions, check_options
from benchmarks.loadtest.prometheus import MetricsSnapshot, metrics_delta
from benchmarks.loadtest.stats import histogram_quantile
from packager.playlist import parse_media_playlist, parse_variants

TOKEN = "loadtest-token"
ROOT = Path(__file__).parents[2]

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.000
#EXT-X-PART-INF:PART-TARGET=0.33333
#EXT-X-MEDIA-SEQUENCE:40
#EXT-X-MAP:URI="init.mp4"
#EXT-X-SKIP:SKIPPED-SEGMENTS=3
#EXT-X-DATERANGE:ID="t1",CLASS="com.shopcast.product",START-DATE="2026-11-21T09:00:00.000Z"
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T09:00:06.000Z
#EXT-X-PART:DURATION=0.33333,URI="43.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI="43.1.m4s"
#EXTINF:0.66667,
43.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T09:00:06.667Z
#EXT-X-PART:DURATION=0.33333,URI="44.0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="44.1.m4s"
#EXT-X-RENDITION-REPORT:URI="../180p/index.m3u8",LAST-MSN=44,LAST-PART=0
"""


def test_parse_media_playlist_counts_parts_after_a_skip() -> None:
    view = parse_media_playlist(PLAYLIST)
    assert [p[:2] for p in view.parts] == [(43, 0), (43, 1), (44, 0)]
    assert view.hint == (44, 1) and view.last == (44, 0)
    assert view.reports == [("../180p/index.m3u8", 44, 0)]
    assert view.can_skip and not view.ended
    assert view.dateranges == ["t1"] and view.part_target == pytest.approx(1 / 3, abs=1e-4)


def test_parse_variants() -> None:
    text = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="a,b"\n360p/index.m3u8\n'
    assert parse_variants(text) == [("360p/index.m3u8", 900000)]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    inf = float("inf")
    buckets = [(0.1, 50.0), (0.2, 100.0), (inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.75) == pytest.approx(0.15)
    assert histogram_quantile([(0.1, 0.0), (inf, 0.0)], 0.5) is None


def test_metrics_delta_survives_a_counter_reset() -> None:
    start = MetricsSnapshot(0.0, cpu_seconds=10.0, dropped={"a": 7.0, "b": 1.0})
    end = MetricsSnapshot(4.0, cpu_seconds=12.0, dropped={"a": 2.0, "b": 4.0, "c": 9.0})
    delta = metrics_delta(start, end, ["a", "b"])
    assert delta["cpu_cores"] == 0.5
    assert delta["hub_dropped_frames"] == 2 + 3  # "a" reconnected: all of its 2 are new


def test_check_options() -> None:
    assert "nothing to do" in (check_options(LoadTestOptions()) or "")
    assert "--api-token" in (check_options(LoadTestOptions(tags_per_second=1)) or "")
    assert "streams" in (check_options(LoadTestOptions(publishers=3)) or "")
    assert check_options(LoadTestOptions(viewers=2)) is None
    srt = LoadTestOptions(publishers=2, protocol="srt", keys=["k1", "k2"])
    assert "--protocol srt" in (check_options(srt) or "")
    assert "rtmp or srt" in (check_options(LoadTestOptions(viewers=1, protocol="udp")) or "")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``shopcast serve``: passthrough + one small rung (two renditions: rendition reports)."""
    srv = serve_env(
        tmp_path,
        SHOPCAST_API_TOKENS=TOKEN,
        SHOPCAST_TRANSCODE_RUNGS="180p:200k",
    )
    env = srv.env
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [SHOPCAST, "serve", "--config", str(ROOT / "shopcast.toml")],
        env=env,
        stdout=log,
        stderr=log,
    )
    http = f"http://127.0.0.1:{srv.http_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"{http}/metrics", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "shopcast serve did not come up"
            time.sleep(0.1)
        yield http, f"rtmp://127.0.0.1:{srv.rtmp_port}/live"
    finally:
        proc.kill()
        proc.wait()
        log.close()


def assert_counts_add_up(counts: dict[str, Any]) -> None:
    assert counts["sent"] == counts["ok"] + counts["failed"], counts
    assert counts["failed"] == sum(counts["errors"].values()), counts


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian ffmpeg not installed")
def test_loadtest_against_local_serve(serve: tuple[str, str], tmp_path: Path) -> None:
    http, rtmp = serve
    cmd = [SHOPCAST, "loadtest", "--target", http, "--rtmp", rtmp, "--api-token", TOKEN]
    cmd += ["--publishers", "1", "--viewers", "5", "--tags-per-second", "2", "--duration", "8"]
    cmd += ["--report", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]
    cmd += ["--plots", str(tmp_path / "plots")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    progress = [line for line in run.stderr.splitlines() if line.startswith("[")]
    assert len(progress) >= 6, run.stderr  # one line per second

    report = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "r.md").read_text() == run.stdout.removesuffix("\n")
    assert "## Requests" in run.stdout and "| **total** |" in run.stdout

    total = report["requests_total"]
    assert_counts_add_up(total)
    for counts in report["requests"].values():
        assert_counts_add_up(counts)
    assert total["sent"] == sum(c["sent"] for c in report["requests"].values())
    assert total["failed"] == 0, report["requests"]

    load = report["load"]
    assert load["publishers"]["running_at_end"] == 1 and load["publishers"]["exits"] == 0
    assert report["requests"]["part"]["ok"] >= 5 * 8 * 2  # each viewer: most of 3 parts/s
    assert load["viewers"]["parts_per_second_per_viewer"] > 2
    assert report["latency"]["part_delivery"]["count"] == report["requests"]["part"]["ok"]
    assert report["rendition_reports"]["samples"] > 0  # two renditions report each other

    tags = report["tags"]
    assert tags["sent"] == report["requests"]["tag_post"]["sent"] == 16
    assert tags["accepted"] == tags["visible"] == 16 and tags["not_visible"] == 0
    assert report["latency"]["tag_visible"]["p95_ms"] < 2000

    target = report["target_process"]
    assert target["cpu_seconds"] > 0 and target["hub_dropped_frames"] == 0
    assert report["latency"]["server_added_part_lateness"]["count"] > 0
    timeline = report["timeline"]
    assert (
        8 <= len(timeline) <= 9
        and sum(s["parts"] for s in timeline) == report["requests"]["part"]["ok"]
    )
