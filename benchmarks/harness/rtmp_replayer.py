"""A light RTMP load generator: many publishers in one asyncio process replay one recorded FLV in
real time (no ffmpeg per publisher).

Each publisher is the project's own client role (:class:`ingest.rtmp.client.RTMPPublisher`:
handshake, ``connect``, ``createStream``, ``publish``); media then goes out as the chunks that
client would write (type-0 header, cut at its chunk size), serialised once per tag and re-stamped
per send, so the generator's cost per message is a header patch and a socket write. One task
sends every due tag of every publisher (a heap of next-due times), so the timer count does not
grow with the publishers. The recording loops with its timestamps carried on, as
``ffmpeg -re -stream_loop -1 -c copy`` does (its sequence headers sent once).

Run as ``python -m benchmarks.harness.rtmp_replayer`` (pinned by the caller with ``taskset``):
it connects the publishers, prints ``live <connected> <failed> <seconds to the last start>``,
then on stdin ``mark`` resets its counters (the start of a measured window) and ``stop``
prints one JSON line: its own CPU, its send lag, each publisher's backlog and closures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import random
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadtest.stats import percentile
from ingest.rtmp.client import RTMPPublisher

MSG_AUDIO, MSG_VIDEO = 8, 9
TICK = 0.005  # the sender sleeps at most this long between looks at the heap
#: ... and at least this long: with hundreds of publishers the next message is always microseconds
#: away, and sleeping only until then polled a full core. The send lag it adds is reported.
MIN_SLEEP = 0.001


@dataclass(frozen=True)
class FlvTag:
    """One FLV tag: message type (8 audio, 9 video, 18 script data), timestamp ms, tag body."""

    type_id: int
    timestamp: int
    payload: bytes


def flv_tags(data: bytes) -> Iterator[FlvTag]:
    """FLV (spec v10.1 E.2-E.4): header, then [prev size u32][tag header 11 B][payload]..."""
    if data[:3] != b"FLV":
        raise ValueError("not an FLV file")
    (offset,) = struct.unpack_from(">I", data, 5)
    pos = offset + 4  # PreviousTagSize0
    while pos + 11 <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        payload = data[pos + 11 : pos + 11 + size]
        if len(payload) != size:
            raise ValueError("truncated FLV")
        yield FlvTag(type_id, ts, payload)
        pos += 11 + size + 4


def is_sequence_header(tag: FlvTag) -> bool:
    """AVC/HEVC decoder configuration or AAC AudioSpecificConfig: sent once, not per loop."""
    if tag.type_id == MSG_VIDEO:
        return len(tag.payload) > 1 and tag.payload[1] == 0 and tag.payload[0] & 0x0F == 7
    if tag.type_id == MSG_AUDIO:
        return len(tag.payload) > 1 and tag.payload[0] >> 4 == 10 and tag.payload[1] == 0
    return False


@dataclass
class Recording:
    """The FLV's media as chunked messages at timestamp 0, to be re-stamped per send."""

    headers: list[tuple[int, bytes]]  # (type, chunks) sent once at the start
    loop: list[tuple[int, bytes]]  # (timestamp ms within the loop, chunks)
    loop_ms: int  # one loop's length: the last tag's timestamp plus one frame

    @classmethod
    def load(cls, path: Path, publisher: RTMPPublisher) -> Recording:
        tags = [t for t in flv_tags(path.read_bytes()) if t.type_id in (MSG_AUDIO, MSG_VIDEO)]
        messages = publisher.conn.messages
        stream_id = publisher.conn.stream_id

        def chunks(tag: FlvTag) -> bytes:
            return messages.media(tag.type_id, tag.payload, 0, stream_id)

        headers = [(t.type_id, chunks(t)) for t in tags if is_sequence_header(t)]
        media = [t for t in tags if not is_sequence_header(t)]
        video = sorted(t.timestamp for t in media if t.type_id == MSG_VIDEO)
        frame = (video[-1] - video[0]) // max(len(video) - 1, 1) if len(video) > 1 else 33
        first = media[0].timestamp
        loop = [(t.timestamp - first, chunks(t)) for t in media]
        return cls(headers, loop, media[-1].timestamp - first + frame)


def stamped(chunks: bytes, timestamp: int) -> bytes:
    """The message's chunks with the type-0 header's timestamp set (one-byte basic header)."""
    return chunks[:1] + (timestamp & 0xFFFFFF).to_bytes(3, "big") + chunks[4:]


@dataclass
class Replayed:
    """One publisher's replay state."""

    publisher: RTMPPublisher
    origin: float  # monotonic time of the recording's timestamp 0
    index: int = 0  # next message in the loop
    loops: int = 0
    closed: bool = False
    max_backlog: int = 0  # bytes buffered in our transport, worst seen in the window


@dataclass
class Counters:
    """Measured over a window (reset by ``mark``)."""

    cpu0: float = field(default_factory=time.process_time)
    wall0: float = field(default_factory=time.monotonic)
    lag: list[float] = field(default_factory=list)  # per tick: the oldest due message's lag
    messages: int = 0
    bytes: int = 0


class Replayer:
    """Connects ``keys`` and replays ``source`` on each until stopped."""

    def __init__(self, host: str, port: int, app: str, keys: list[str], source: Path) -> None:
        self.host, self.port, self.app, self.keys, self.source = host, port, app, keys, source
        self.recording: Recording | None = None
        self.replayed: list[Replayed] = []
        self.failures: list[str] = []
        self.counters = Counters()
        self._heap: list[tuple[float, int]] = []
        self._stopped = False

    async def connect_all(self, ramp: float, timeout: float) -> float:
        """Connect every publisher, ``ramp`` seconds apart in all; seconds to the last start."""
        started = time.monotonic()
        last = 0.0

        async def one(n: int, key: str) -> None:
            nonlocal last
            await asyncio.sleep(ramp * n / max(len(self.keys), 1))
            publisher = RTMPPublisher(self.host, self.port, self.app, key)
            try:
                await publisher.connect(timeout=timeout)
            except Exception as exc:  # refused, timed out: counted, the run goes on
                self.failures.append(f"{type(exc).__name__}: {str(exc)[:100]}")
                await publisher.close()
                return
            last = max(last, time.monotonic() - started)
            if self.recording is None:
                self.recording = Recording.load(self.source, publisher)
            for _, chunks in self.recording.headers:
                self._write(publisher, chunks)
            # A random phase, as independent phones would have.
            origin = time.monotonic() - random.random() * 1.0
            self.replayed.append(Replayed(publisher, origin))
            heapq.heappush(self._heap, (origin, len(self.replayed) - 1))

        await asyncio.gather(*(one(n, key) for n, key in enumerate(self.keys)))
        return last

    def _write(self, publisher: RTMPPublisher, data: bytes) -> None:
        assert publisher._w is not None
        publisher._w.write(data)

    async def send(self) -> None:
        """Every due message of every publisher, then sleep until the next one is due."""
        while not self._stopped:
            now = time.monotonic()
            if self._heap and self._heap[0][0] <= now:
                self.counters.lag.append(now - self._heap[0][0])
            while self._heap and self._heap[0][0] <= now:
                _, n = heapq.heappop(self._heap)
                r = self.replayed[n]
                if r.publisher.closed:
                    r.closed = True
                    continue
                heapq.heappush(self._heap, (self._send_due(r, now), n))
            wait = self._heap[0][0] - time.monotonic() if self._heap else TICK
            await asyncio.sleep(min(max(wait, MIN_SLEEP), TICK))

    def _send_due(self, r: Replayed, now: float) -> float:
        """Write ``r``'s messages due by ``now`` in one write; the next one's due time."""
        assert self.recording is not None
        loop, loop_ms = self.recording.loop, self.recording.loop_ms
        out = []
        while True:
            offset, chunks = loop[r.index]
            at = r.loops * loop_ms + offset
            due = r.origin + at / 1000
            if due > now:
                break
            out.append(stamped(chunks, at))
            r.index += 1
            if r.index == len(loop):
                r.index, r.loops = 0, r.loops + 1
        data = b"".join(out)
        self._write(r.publisher, data)
        self.counters.messages += len(out)
        self.counters.bytes += len(data)
        assert r.publisher._w is not None
        r.max_backlog = max(r.max_backlog, r.publisher._w.transport.get_write_buffer_size())
        return due

    def mark(self) -> None:
        self.counters = Counters()
        for r in self.replayed:
            r.max_backlog = 0

    def report(self) -> dict[str, Any]:
        c = self.counters
        wall = time.monotonic() - c.wall0
        backlog = sorted(r.max_backlog for r in self.replayed)
        bitrate = c.bytes * 8 / wall / max(len(self.replayed), 1) if wall > 0 else 0.0
        return {
            "publishers": len(self.replayed),
            "failed": len(self.failures),
            "failures": sorted(set(self.failures))[:5],
            "closed": sum(1 for r in self.replayed if r.closed or r.publisher.closed),
            "cpu_cores": round((time.process_time() - c.cpu0) / wall, 3) if wall > 0 else None,
            "messages_per_s": round(c.messages / wall) if wall > 0 else None,
            "kbps_per_publisher": round(bitrate / 1000),
            "send_lag_p50_ms": round(percentile(c.lag, 0.5) * 1000, 1) if c.lag else None,
            "send_lag_p95_ms": round(percentile(c.lag, 0.95) * 1000, 1) if c.lag else None,
            "send_lag_max_ms": round(max(c.lag) * 1000, 1) if c.lag else None,
            # Bytes our side could not hand to the kernel: the server is not reading in time.
            "backlog_max_bytes": backlog[-1] if backlog else 0,
            "behind": sum(1 for b in backlog if b > 256 * 1024),
        }

    async def close(self) -> None:
        self._stopped = True
        for r in self.replayed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.publisher.close(), 2.0)


async def main(args: argparse.Namespace) -> None:
    keys = Path(args.keys).read_text().split()
    replayer = Replayer(args.host, args.port, args.app, keys, Path(args.source))
    # Sending starts with the first publisher: a publisher left silent after its publish
    # would be dropped by the origin's gap_timeout while the others still connect.
    sender = asyncio.ensure_future(replayer.send())
    last = await replayer.connect_all(args.ramp, args.timeout)
    print(f"live {len(replayer.replayed)} {len(replayer.failures)} {last:.3f}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "mark":
            replayer.mark()
        elif line == "stop":
            print(json.dumps(replayer.report()), flush=True)
            break
    await replayer.close()
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="live")
    parser.add_argument("--keys", required=True, help="file of stream keys, one per line")
    parser.add_argument("--source", required=True, help="the FLV to replay")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds to spread connects over")
    parser.add_argument("--timeout", type=float, default=30.0)
    try:
        import uvloop

        uvloop.run(main(parser.parse_args()))
    except ImportError:
        asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    run()
