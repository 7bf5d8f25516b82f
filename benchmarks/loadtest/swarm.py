"""A lean swarm of LL-HLS viewers for load tests: hls.js's loop (blocking playlist reload, then
fetch each new part) on raw keep-alive HTTP/1.1 connections, many viewers per process.

Run as ``python -m benchmarks.loadtest.swarm`` (arguments below); it prints one JSON object: every
part each viewer received (msn, index, bytes, wall-clock arrival), errors, and how late the
process's own event loop ran, so a caller can tell a slow server from a saturated generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from typing import Any

# Not packager.playlist.parse_media_playlist (the reader everything else uses): every viewer of a
# swarm reads every reload, and scanning the bytes from its last part on costs about 1/20 of a
# full parse (3 µs against 65 µs for a 12-segment playlist, measured); the generator must not
# become the bottleneck it measures. Part names are the packager's ``part_uri`` (msn.index.m4s).
_PART = re.compile(rb'#EXT-X-PART:[^\n]*?URI="(?:[^"/]*/)*(\d+)\.(\d+)\.m4s')
_HINT = re.compile(rb'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(?:[^"/]*/)*(\d+)\.(\d+)\.m4s')
_MAP = re.compile(rb'#EXT-X-MAP:URI="([^"]+)"')
#: A response head longer than this is an error (the edge's are a few hundred bytes).
MAX_HEAD = 1 << 16
#: The probe's period: the loop's lateness on it is the generator's own backlog.
PROBE_SECONDS = 0.002


def http_get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: edge\r\nUser-Agent: swarm\r\n\r\n".encode()


class Swarm:
    """What the viewers share: the target, the clock, the results."""

    def __init__(self, host: str, port: int, playlist: str, until: float) -> None:
        self.host, self.port = host, port
        self.playlist = playlist
        self.directory = playlist.rsplit("/", 1)[0]
        self.until = until
        self.parts: list[tuple[int, int, int, int, float]] = []  # viewer, msn, index, bytes, at
        self.errors: list[str] = []
        self.lateness: list[float] = []
        self.done = asyncio.get_running_loop().create_future()
        self.running = 0

        # Requests as bytes: the first playlist load, and templates filled in with (msn, part).
        self.first = http_get(playlist)
        self.blocking = http_get(playlist.replace("%", "%%") + "?_HLS_msn=%d&_HLS_part=%d")
        self.part = http_get(self.directory.replace("%", "%%") + "/%d.%d.m4s")

    def finished(self) -> None:
        self.running -= 1
        if self.running == 0 and not self.done.done():
            self.done.set_result(None)


class Viewer(asyncio.Protocol):
    """One viewer on one connection: playlist → init → (blocking reload → new parts)*."""

    def __init__(self, swarm: Swarm, number: int) -> None:
        self.swarm, self.number = swarm, number
        self.transport: asyncio.Transport | None = None
        self._partial = b""  # a response head split over reads
        self._body: list[bytes] = []
        self._head_done = False
        self._status = 0
        self._length = 0
        self._received = 0
        self._keep = False  # keep the body (playlists, init) or only count it (parts)
        self._on_response: Any = None
        self.last: tuple[int, int] | None = None
        self.pending: list[tuple[int, int]] = []
        self.hint: tuple[int, int] | None = None
        self.stopped = False

    # -- plumbing: one request at a time, answers framed by Content-Length -----------------

    def _get(self, request: bytes, keep: bool, on_response: Any) -> None:
        self._head_done, self._keep = False, keep
        self._on_response = on_response
        assert self.transport is not None
        self.transport.write(request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._get(self.swarm.first, True, self._on_playlist)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopped:
            self._fail(f"connection lost: {exc}")

    def data_received(self, data: bytes) -> None:
        if self._head_done:
            self._received += len(data)
            if self._keep:
                self._body.append(data)
        else:
            if self._partial:
                data = self._partial + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD:
                    self._fail("response head too long")
                self._partial = data
                return
            self._partial = b""
            self._status = int(data[9:12])
            at = data.find(b"\r\nContent-Length: ", 0, end)
            if at >= 0:  # the spelling the edge and nginx use: no copy of the head needed
                self._length = int(data[at + 18 : data.find(b"\r\n", at + 2)])
            else:
                head = data[: end + 2].lower()
                at = head.find(b"\r\ncontent-length:")
                self._length = int(head[at + 17 : head.find(b"\r\n", at + 2)]) if at >= 0 else 0
            self._received = len(data) - end - 4
            self._body = [data[end + 4 :]] if self._keep else []
            self._head_done = True
        if self._received >= self._length:
            if self._received > self._length:
                self._fail("more bytes than Content-Length")
                return
            self._on_response(self._status, b"".join(self._body))

    # -- the viewer ----------------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        self.swarm.errors.append(f"viewer {self.number}: {why}")
        self._stop()

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            if self.transport is not None:
                self.transport.close()
            self.swarm.finished()

    def _on_playlist(self, status: int, body: bytes) -> None:
        if status != 200:
            self._fail(f"playlist: HTTP {status}")
            return
        start = 0
        if self.last is not None:
            at = body.rfind(b"%d.%d.m4s" % self.last)
            start = max(at, 0)
        for m in _PART.finditer(body, start):
            part = (int(m.group(1)), int(m.group(2)))
            if self.last is None or part > self.last:
                self.pending.append(part)
        hint = _HINT.search(body, body.rfind(b"#EXT-X-PRELOAD-HINT"))
        self.hint = (int(hint.group(1)), int(hint.group(2))) if hint else None
        if self.last is None:
            # Join at the live edge (hls.js in low-latency mode): the newest part only.
            self.pending = self.pending[-1:]
            init = _MAP.search(body)
            if init is not None:
                target = f"{self.swarm.directory}/{init.group(1).decode()}"
                self._get(http_get(target), True, self._on_init)
                return
        self._next()

    def _on_init(self, status: int, body: bytes) -> None:
        if status != 200 or not body:
            self._fail(f"init: HTTP {status}")
            return
        self._next()

    def _next(self) -> None:
        if time.monotonic() >= self.swarm.until:
            self._stop()
        elif self.pending:
            self._get(self.swarm.part % self.pending[0], False, self._on_part)
        elif self.hint is not None:
            self._get(self.swarm.blocking % self.hint, True, self._on_playlist)
        else:
            self._get(self.swarm.first, True, self._on_playlist)

    def _on_part(self, status: int, _body: bytes) -> None:
        msn, index = self.pending.pop(0)
        if status != 200:
            self._fail(f"part {msn}.{index}: HTTP {status}")
            return
        self.swarm.parts.append((self.number, msn, index, self._received, time.time()))
        self.last = (msn, index)
        self._next()


async def probe(swarm: Swarm) -> None:
    """Record how late a short sleep wakes up: the time the loop spent on other work."""
    loop = asyncio.get_running_loop()
    while not swarm.done.done():
        due = loop.time() + PROBE_SECONDS
        await asyncio.sleep(PROBE_SECONDS)
        swarm.lateness.append(loop.time() - due)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = args.base.removeprefix("http://").split(":")
    until = time.monotonic() + args.join + args.seconds
    swarm = Swarm(host, int(port), args.playlist, until)
    swarm.running = args.viewers
    prober = asyncio.ensure_future(probe(swarm))
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    for number in range(args.viewers):
        await asyncio.sleep(max(0.0, wall0 + args.join * number / args.viewers - time.monotonic()))
        try:
            viewer = Viewer(swarm, args.first + number)
            await loop.create_connection(lambda v=viewer: v, host, port)  # type: ignore[misc]
        except OSError as exc:
            swarm.errors.append(f"viewer {args.first + number}: connect: {exc}")
            swarm.finished()
    await asyncio.wait_for(swarm.done, args.join + args.seconds + 30)
    await prober
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    return {
        "parts": swarm.parts,
        "errors": swarm.errors[:50],
        "error_count": len(swarm.errors),
        "lateness": sorted(swarm.lateness),
        "cpu": cpu / (time.monotonic() - wall0),
    }


def command(
    base: str, playlist: str, viewers: int, *, first: int = 0, seconds: float, join: float
) -> list[str]:
    """The command line that runs a swarm in a process of its own."""
    args = [sys.executable, "-m", "benchmarks.loadtest.swarm", "--base", base]
    args += ["--playlist", playlist, "--viewers", str(viewers), "--first", str(first)]
    return [*args, "--seconds", str(seconds), "--join", str(join)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="http://host:port of the edge")
    parser.add_argument("--playlist", required=True, help="media playlist path")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of this process's 1st viewer")
    parser.add_argument("--seconds", type=float, default=10.0, help="watching time after joining")
    parser.add_argument("--join", type=float, default=1.0, help="viewers join evenly over this")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
