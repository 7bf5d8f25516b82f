"""Tag latency across the cluster: a tag POSTed to origin A for a show owned by origin C (A
forwards it, C stores and stamps it) against the same tag POSTed to C itself, in one run.

Two ``shopcast serve`` processes on one PostgreSQL (Debian's, started here), ffmpeg publishing
360×640 testsrc2 to C in real time; a low-latency viewer on C holds a blocking reload on every
rendition. Per tag: the API round trip, and the time until its DATERANGE reaches the viewer.
Tags alternate between A and C so both see the same load. Figures (and the A/C ratios) go to
``extra_info``; the asserts are about correctness (every acknowledged tag stored and shown).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness.origin import ffmpeg_publish_args, requires_ffmpeg
from benchmarks.harness.postgres import PostgresServer, requires_postgres
from benchmarks.loadtest.stats import percentile
from benchmarks.test_bench_tags import follow

# The e2e tests' process helpers; imported by name so mypy (run on benchmarks/) skips them.
_pg: Any = importlib.import_module("tests.e2e.test_store_postgres")
_cluster: Any = importlib.import_module("tests.e2e.test_cluster_routing")

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"  # tests/benchmarks: tiny sizes
TAGS = 10 if SMOKE else 100  # per origin
PUBLISH = 25.0 if SMOKE else 90.0


async def measure(tmp_path: Path, url: str) -> dict[str, Any]:
    envs = [_cluster.origin_env(tmp_path, url, name, "") for name in ("a", "c")]
    async with _pg.serving_all(*envs), aiohttp.ClientSession(headers=_cluster.AUTH) as http:
        a, c = envs
        async with http.post(f"{a.http}/api/v1/streams/demo/key") as r:
            key = (await r.json())["stream_key"]
        args = ffmpeg_publish_args(c.rtmp_url(key), seconds=PUBLISH, size="360x640", realtime=True)
        publisher = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            names = await _cluster.wait_live(http, c.http)
            await _cluster.wait_owner(http, a.http, "c", 10)
            seen: dict[str, dict[str, float]] = {name: {} for name in names}
            stop = asyncio.Event()
            viewers = [
                asyncio.ensure_future(
                    follow(http, f"{c.http}/hls/demo/{name}/index.m3u8", seen[name], stop)
                )
                for name in names
            ]
            posted: dict[str, list[tuple[str, float, float]]] = {"a": [], "c": []}
            rng = random.Random(7)
            try:
                await asyncio.sleep(1.0)  # the viewers are holding requests
                for i in range(2 * TAGS):
                    await asyncio.sleep(rng.uniform(0.15, 0.45))  # random phase to the parts
                    via, base = ("a", a.http) if i % 2 == 0 else ("c", c.http)
                    body = {"kind": "product", "product_id": f"{via}{i}"}
                    sent = time.perf_counter()
                    async with http.post(f"{base}/api/v1/streams/demo/tags", json=body) as r:
                        tag = await r.json()
                        assert r.status == 201, tag
                    posted[via].append((tag["id"], sent, time.perf_counter()))
                every = [t for p in posted.values() for t, _, _ in p]
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not all(
                    t in seen[n] for n in names for t in every
                ):
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await asyncio.gather(*viewers)
            async with http.get(f"{a.http}/api/v1/streams/demo/tags") as r:
                listed = {t["id"] for t in (await r.json())["tags"]}
        finally:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
    assert listed == set(every)  # every acknowledged tag stored, whichever origin took it
    out: dict[str, Any] = {}
    for via, tags in posted.items():
        out[via] = {"api": [acked - sent for _, sent, acked in tags]}
        for name in names:
            missing = [t for t, _, _ in tags if t not in seen[name]]
            assert not missing, f"{name}: {len(missing)} tags never seen by the viewer"
            out[via][name] = [seen[name][t] - sent for t, sent, _ in tags]
    return out


@requires_ffmpeg
@requires_postgres
def test_bench_tag_through_another_origin(benchmark: Any, tmp_path: Path, capsys: Any) -> None:
    """POST /tags on A (owner C) vs on C: round trip and time to the viewer, p50/p95, ratios."""
    pg = PostgresServer()
    pg.start()
    try:
        url = pg.create_database()
        result = benchmark.pedantic(
            lambda: asyncio.run(measure(tmp_path, url)), rounds=1, iterations=1
        )
    finally:
        pg.close()
    info: dict[str, Any] = {"tags_per_origin": TAGS}
    lines = [
        f"\ntag latency, ms ({TAGS} tags each way): POSTed to A (owner C, forwarded) vs to C",
        f"{'measure':<22}{'C p50':>8}{'A p50':>8}{'C p95':>8}{'A p95':>8}{'A/C p50':>9}",
    ]
    for measure_name in result["c"]:
        label = "API round trip" if measure_name == "api" else f"to viewer {measure_name}"
        c50, c95 = (percentile(result["c"][measure_name], q) for q in (0.5, 0.95))
        a50, a95 = (percentile(result["a"][measure_name], q) for q in (0.5, 0.95))
        ratio = a50 / c50 if c50 > 0 else float("nan")
        info[measure_name] = {
            "owner_p50_ms": round(c50 * 1000, 1),
            "owner_p95_ms": round(c95 * 1000, 1),
            "forwarded_p50_ms": round(a50 * 1000, 1),
            "forwarded_p95_ms": round(a95 * 1000, 1),
            "forwarded_over_owner_p50": round(ratio, 2),
        }
        lines.append(
            f"{label:<22}{c50 * 1000:>8.1f}{a50 * 1000:>8.1f}{c95 * 1000:>8.1f}"
            f"{a95 * 1000:>8.1f}{ratio:>9.2f}"
        )
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print("\n".join(lines))
