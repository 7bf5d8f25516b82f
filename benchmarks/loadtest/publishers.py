"""RTMP or SRT publishers: an ffmpeg process per stream, restarted a bounded number of times."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import time

from benchmarks.loadtest.options import LoadTestOptions

PUBLISHER_RESTARTS = 3  # per publisher: a crashing ffmpeg is restarted this often, no more


def publisher_command(url: str, o: LoadTestOptions) -> list[str]:
    """ffmpeg replaying ``--source`` (looped, ``-c copy``) or encoding testsrc2, in real time."""
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    if o.source is not None:
        cmd += ["-stream_loop", "-1", "-i", str(o.source), "-c", "copy"]
    else:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={o.size}:rate={o.fps}"]
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"]
        cmd += ["-g", str(o.fps), "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"]
    return [*cmd, "-f", "mpegts" if url.startswith("srt://") else "flv", url]


class Publisher:
    """One ffmpeg publisher, restarted (a bounded number of times) if it exits during the run."""

    def __init__(self, stream: str, url: str, command: list[str]) -> None:
        self.stream, self.url, self.command = stream, url, command
        self.process: asyncio.subprocess.Process | None = None
        self.exits: list[int] = []
        self.stderr: collections.deque[str] = collections.deque(maxlen=5)
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def start(self, deadline: float) -> None:
        self._task = asyncio.ensure_future(self._run(deadline))

    async def _run(self, deadline: float) -> None:
        for _ in range(1 + PUBLISHER_RESTARTS):
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            assert self.process.stderr is not None
            async for line in self.process.stderr:  # ends when ffmpeg exits
                self.stderr.append(line.decode(errors="replace").rstrip())
            self.exits.append(await self.process.wait())
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
