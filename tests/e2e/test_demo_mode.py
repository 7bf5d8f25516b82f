"""`shopcast serve --demo`: the built-in show goes live over RTMP, pins products, stops cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, read_until, serve_env

pytestmark = [pytest.mark.e2e]


async def test_serve_demo_goes_live_pins_products_and_stops(tmp_path: Path) -> None:
    srv = serve_env(
        tmp_path,
        # Small picture and ladder: the 2-core CI machine stays real-time.
        SHOPCAST_DEMO_SIZE="360x640",
        SHOPCAST_TRANSCODE_RUNGS="360p:600k,180p:200k",
    )
    env = srv.env
    env.pop("SHOPCAST_API_TOKENS", None)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST,
        "serve",
        "--config",
        "shopcast.toml",
        "--demo",
        "--demo-pin-every",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = await read_until(proc.stdout, r"demo show:")
        token = re.search(r"API token \(keep it secret\): (\S+)", out)
        assert token, out
        assert f"http://127.0.0.1:{srv.http_port}/demo/demo" in out
        base = f"http://127.0.0.1:{srv.http_port}"
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        st: dict[str, Any] = {}
        products: list[dict[str, Any]] = []
        master = ""
        async with aiohttp.ClientSession(headers=headers) as http:
            while time.monotonic() - started < 25:
                await asyncio.sleep(0.25)
                async with http.get(f"{base}/api/v1/streams/demo") as r:
                    assert r.status == 200
                    st = await r.json()
                async with http.get(f"{base}/api/v1/streams/demo/tags") as r:
                    assert r.status == 200
                    products = [t for t in (await r.json())["tags"] if t["kind"] == "product"]
                async with http.get(f"{base}/hls/demo/master.m3u8") as r:
                    master = await r.text() if r.status == 200 else ""
                if st["state"] == "live" and len(products) >= 2 and "#EXT-X-STREAM-INF" in master:
                    break
            async with http.get(f"{base}/demo/demo") as r:
                assert r.status == 200
                page = await r.text()
            async with http.get(f"{base}/static/shop.js") as r:
                assert r.status == 200
        elapsed = time.monotonic() - started
        assert st["state"] == "live", st
        video = st["ingest"]["video"]
        assert (video["width"], video["height"]) == (360, 640)
        assert len(products) >= 2, products
        assert all(p["data"]["title"] and p["data"]["price"] for p in products), products
        assert len({p["product_id"] for p in products}) >= 2
        assert "360p/index.m3u8" in master and "180p/index.m3u8" in master, master
        assert "/static/shop.js" in page
        print(f"\ndemo live with {len(products)} product pins after {elapsed:.1f} s")

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        log = (await proc.stderr.read()).decode()
        assert "demo: publishing" in log and "demo: pinned product" in log, log[-2000:]
        assert "demo: stopped" in log, log[-2000:]
        assert "Traceback" not in log, log[-4000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
