"""Origins with an access log, the edge (``shopcast edge`` or nginx) as a real process, and the
polls the edge tests and the edge benchmark share."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.origin import Origin, ffmpeg_publish_args, make_config, start_ffmpeg
from benchmarks.harness.serve_env import SHOPCAST, free_port
from benchmarks.harness.sim import AccessLog
from shopcast.config import PlaybackSection
from shopcast.server import ShopcastServer


class LoggedOrigin(Origin):
    def __init__(self, server: ShopcastServer, log: AccessLog) -> None:
        super().__init__(server)
        self.log = log


@asynccontextmanager
async def logged_origin(
    tmp_path: Path, secret: str = "", reconnect_window: float | None = None
) -> AsyncIterator[LoggedOrigin]:
    """An in-process origin whose every answer lands in ``origin.log``."""
    config = make_config(tmp_path)
    if reconnect_window is not None:
        config = replace(
            config, packager=replace(config.packager, reconnect_window=reconnect_window)
        )
    if secret:
        config = replace(config, playback=PlaybackSection(secret=secret))
    server = ShopcastServer(config)
    log = AccessLog()
    server.app.middlewares.append(log.middleware)
    await server.start()
    try:
        yield LoggedOrigin(server, log)
    finally:
        await server.close()


@asynccontextmanager
async def edge_process(
    origins: list[str], *extra: str, cpu: int | None = None
) -> AsyncIterator[str]:
    """``shopcast edge`` as a child process; yields its base URL once it answers (no
    ``origins``: a cluster edge, with ``--cluster`` in ``extra``)."""
    port = free_port()
    args = [SHOPCAST, "edge", "--listen", f"127.0.0.1:{port}"]
    if origins:
        args += ["--origin", ",".join(origins)]
    proc = await asyncio.create_subprocess_exec(
        *args,
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{base}/metrics") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the edge did not come up")
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode(errors="replace")
        assert "Traceback" not in err, err[-4000:]


NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
)
NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx-edge.conf"
requires_nginx = pytest.mark.skipif(NGINX is None, reason="Debian nginx not installed")


@asynccontextmanager
async def nginx_edge(origin: str, cpu: int | None = None) -> AsyncIterator[str]:
    """deploy/nginx-edge.conf in a temp prefix, nginx as a non-daemon child; its base URL."""
    assert NGINX is not None
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="shopcast-nginx-") as tmp:
        root = Path(tmp)
        conf = NGINX_CONF.read_text()
        for name, value in (
            ("ORIGIN", origin),
            ("LISTEN", f"127.0.0.1:{port}"),
            ("CACHE_PATH", tmp),
        ):
            conf = conf.replace("${" + name + "}", value)
        (root / "nginx.conf").write_text(conf)
        globals_ = f"daemon off; pid {tmp}/nginx.pid;"
        if os.geteuid() == 0:
            globals_ += " user root;"  # workers would be nobody, who cannot enter pytest's tmp
        proc = await asyncio.create_subprocess_exec(
            NGINX,
            "-p",
            tmp,
            "-c",
            str(root / "nginx.conf"),
            "-e",
            "stderr",
            "-g",
            globals_,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(100):
                    if proc.returncode is not None:
                        break
                    try:
                        async with http.get(f"{base}/nothing") as r:
                            if r.status == 404:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
            if proc.returncode is not None:
                assert proc.stderr is not None
                raise RuntimeError((await proc.stderr.read()).decode(errors="replace"))
            yield base
        finally:
            if proc.returncode is None:
                proc.terminate()  # fast shutdown
                await proc.wait()


async def publish(
    origin: Origin, seconds: float, size: str = "180x320"
) -> asyncio.subprocess.Process:
    return await start_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(await origin.key()), seconds=seconds, size=size, realtime=True
        )
    )


async def wait_live(
    base: str, stream: str = "demo", timeout: float = 20.0, token: str | None = None
) -> str:
    """Poll the origin until the stream's last media playlist has parts; its path."""
    deadline = time.monotonic() + timeout
    query = f"?token={token}" if token else ""
    async with aiohttp.ClientSession(headers={"User-Agent": "test-poll"}) as http:
        while time.monotonic() < deadline:
            async with http.get(f"{base}/hls/{stream}/master.m3u8{query}") as r:
                if r.status == 200:
                    uris = [ln for ln in (await r.text()).splitlines() if ln and ln[0] != "#"]
                    path = f"/hls/{stream}/{uris[-1].split('?')[0]}"
                    async with http.get(f"{base}{path}{query}") as p:
                        if p.status == 200 and "#EXT-X-PART:" in await p.text():
                            return path
            await asyncio.sleep(0.2)
    raise TimeoutError("the stream did not go live")


async def get_text(url: str, **headers: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return await r.text()


async def get_json(url: str, **headers: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return await r.json()
