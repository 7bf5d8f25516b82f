"""``shopcast serve`` as a newcomer runs it, for tests and benchmarks: free loopback ports, a temp
store, settings by environment override."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

SHOPCAST = str(Path(sys.executable).with_name("shopcast"))


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServeEnv:
    """Ports and the environment of one ``shopcast serve`` process."""

    rtmp_port: int
    http_port: int
    env: dict[str, str]
    srt_port: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def srt_url(self, stream_id: str) -> str:
        """Where ffmpeg publishes over SRT (ffmpeg 5.1 passes ``streamid`` on verbatim)."""
        return f"srt://127.0.0.1:{self.srt_port}?streamid={stream_id}"


def serve_env(store_dir: Path, **overrides: str) -> ServeEnv:
    """Loopback-only ports and a store in ``store_dir``; ``overrides`` are ``SHOPCAST_*`` vars."""
    rtmp_port, http_port, srt_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    env = dict(
        os.environ,
        SHOPCAST_SERVER_RTMP_HOST="127.0.0.1",
        SHOPCAST_SERVER_HTTP_HOST="127.0.0.1",
        SHOPCAST_SERVER_RTMP_PORT=str(rtmp_port),
        SHOPCAST_SERVER_HTTP_PORT=str(http_port),
        SHOPCAST_SRT_HOST="127.0.0.1",
        SHOPCAST_SRT_PORT=str(srt_port),
        SHOPCAST_STORE_PATH=str(store_dir / "store.sqlite3"),
        SHOPCAST_RECORD_PATH=str(store_dir / "recordings"),
    )
    env.pop("SHOPCAST_API_TOKENS", None)
    env.update(overrides)
    return ServeEnv(rtmp_port, http_port, env, srt_port)


async def read_until(stream: asyncio.StreamReader, pattern: str, timeout: float = 20) -> str:
    """Lines from ``stream`` until ``pattern`` matches what was read (or EOF, or timeout)."""
    seen = ""
    async with asyncio.timeout(timeout):
        while not re.search(pattern, seen):
            line = await stream.readline()
            if not line:
                break
            seen += line.decode()
    return seen
