"""`shopcast serve` as a newcomer runs it: printed URLs work, ffmpeg publishes, SIGTERM is clean."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from benchmarks.harness.serve_env import SHOPCAST, read_until, serve_env

from .conftest import ffmpeg_publish_args, requires_ffmpeg, run_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]


async def test_serve_prints_urls_accepts_publish_and_stops_cleanly(tmp_path: Path) -> None:
    srv = serve_env(tmp_path)
    env = srv.env
    env.pop("SHOPCAST_API_TOKENS", None)
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST,
        "serve",
        "--config",
        "shopcast.toml",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = await read_until(proc.stdout, r"status:")
        token = re.search(r"API token \(keep it secret\): (\S+)", out)
        url = re.search(r"publish to: (rtmp://\S+)", out)
        assert token and url, out
        assert url.group(1).startswith(f"rtmp://127.0.0.1:{srv.rtmp_port}/live/")
        assert f"http://127.0.0.1:{srv.http_port}/hls/demo/master.m3u8" in out

        publish = asyncio.ensure_future(
            run_ffmpeg(ffmpeg_publish_args(url.group(1), seconds=20, size="360x640", realtime=True))
        )
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        st: dict = {}
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(100):
                await asyncio.sleep(0.1)
                async with http.get(f"http://127.0.0.1:{srv.http_port}/api/v1/streams/demo") as r:
                    assert r.status == 200
                    st = await r.json()
                if st["state"] == "live" and st["ingest"]["video"]["frames_received"] > 45:
                    break
            async with http.get(f"http://127.0.0.1:{srv.http_port}/api/v1/streams/demo") as r:
                assert r.status == 200
            async with (
                aiohttp.ClientSession() as anon,
                anon.get(f"http://127.0.0.1:{srv.http_port}/api/v1/streams/demo") as r,
            ):
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "unauthorized"
        assert st["state"] == "live", st
        video = st["ingest"]["video"]
        assert (video["width"], video["height"]) == (360, 640)
        assert video["fps"] == pytest.approx(30, abs=1.5)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        code, _ = await asyncio.wait_for(publish, 10)  # the publisher was closed by the shutdown
        assert code != 0
        log = (await proc.stderr.read()).decode()
        assert "shutting down" in log
        assert "stream=demo" in log  # log lines say which stream they are about
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_json_log_lines(tmp_path: Path) -> None:
    srv = serve_env(
        tmp_path,
        SHOPCAST_LOG_FORMAT="json",
    )
    env = srv.env
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST,
        "serve",
        "--config",
        "shopcast.toml",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        text = await read_until(proc.stderr, r"HTTP listening")
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert any(r["message"].startswith("HTTP listening") for r in records)
        assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
