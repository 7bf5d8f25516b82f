"""A real shopcast origin in-process (capturing what each publish session writes into its hub)
and real ffmpeg publishers, for the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.hub import HubReader
from ingest.media import MediaKind, MediaUnit
from ingest.sessions import PublishSession
from shopcast.config import (
    ApiSection,
    Config,
    IngestSection,
    PackagerSection,
    RecordSection,
    ServerSection,
    SrtSection,
    StoreSection,
)
from shopcast.server import ShopcastServer
from transcode.policy import LadderConfig

API_TOKEN = "e2e-test-token"
#: Small rungs keep the 2-core CI machine real-time (sizes are not the point of these tests).
SMALL_LADDER = LadderConfig.from_mapping({"rungs": ["360p:600k", "180p:200k"]})
FFMPEG = shutil.which("ffmpeg")

requires_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="Debian ffmpeg not installed")


@dataclass
class Capture:
    """Everything one publish session wrote into its hub."""

    session: PublishSession
    reader: HubReader
    units: list[MediaUnit] = field(default_factory=list)

    async def drain(self, timeout: float = 20.0) -> list[MediaUnit]:
        async def pump() -> None:
            async for unit in self.reader:
                self.units.append(unit)

        await asyncio.wait_for(pump(), timeout)
        return self.units

    def frames(self, kind: MediaKind) -> list[MediaUnit]:
        return [u for u in self.units if u.kind is kind and not u.is_config]

    def config(self, kind: MediaKind) -> MediaUnit | None:
        return next((u for u in self.units if u.kind is kind and u.is_config), None)


class Origin:
    def __init__(self, server: ShopcastServer) -> None:
        self.server = server
        self.captures: list[Capture] = []
        server.streams.on_session_start.append(self._attach)

    def _attach(self, session: PublishSession) -> None:
        self.captures.append(Capture(session, session.hub.add_reader("e2e", maxsize=1 << 20)))

    def rtmp_url(self, key: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.server.rtmp.port}/{app}/{key}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    async def key(self, stream_id: str = "demo") -> str:
        rec = await self.server.store.get_stream(stream_id)
        assert rec is not None
        return rec.stream_key


def make_config(tmp_path: Path, ladder: LadderConfig | None = None, **ingest: object) -> Config:
    return Config(
        server=ServerSection(
            rtmp_host="127.0.0.1", rtmp_port=0, http_host="127.0.0.1", http_port=0
        ),
        store=StoreSection(path=str(tmp_path / "store.sqlite3")),
        api=ApiSection(tokens=(API_TOKEN,)),
        ingest=IngestSection(**ingest),  # type: ignore[arg-type]
        transcode=ladder or SMALL_LADDER,
        packager=PackagerSection(reconnect_window=10.0),
        record=RecordSection(path=str(tmp_path / "recordings")),
        srt=SrtSection(host="127.0.0.1", port=0),
    )


def ffmpeg_publish_args(
    url: str,
    *,
    seconds: float = 2.0,
    size: str = "180x320",
    rate: int = 30,
    video: bool = True,
    audio: bool = True,
    bframes: int = 0,
    realtime: bool = False,
    copy_to: Path | None = None,
) -> list[str]:
    """Debian ffmpeg publishing a synthetic vertical stream (testsrc2 + sine, libx264 + aac)."""
    assert FFMPEG is not None
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        args.append("-re")
    args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    args += ["-t", str(seconds)]
    if video:
        args += ["-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
        args += ["-g", str(rate), "-bf", str(bframes)]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "96k"]
    if copy_to is not None:
        # The same encode goes to the server and to a file we can compare against.
        args += ["-flags", "+global_header", "-f", "tee", f"[f=flv]{url}|[f=flv]{copy_to}"]
    else:
        args += ["-f", "flv", url]
    return args


async def run_ffmpeg(args: list[str], timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def start_ffmpeg(args: list[str]) -> asyncio.subprocess.Process:
    """A publisher running in the background (stop it with :func:`stop_ffmpeg`)."""
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def stop_ffmpeg(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
