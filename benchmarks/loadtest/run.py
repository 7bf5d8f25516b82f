"""One load-test run: streams and publishers set up, viewers and taggers for ``duration``."""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import sys
import time
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

from benchmarks.loadtest.accounting import RequestLog, Second, TagRecord
from benchmarks.loadtest.options import LoadTestOptions, has_key
from benchmarks.loadtest.prometheus import MetricsSnapshot
from benchmarks.loadtest.publishers import Publisher, publisher_command
from benchmarks.loadtest.report import build_report
from benchmarks.loadtest.stats import percentile
from benchmarks.loadtest.viewers import TAG_GRACE, LowLatencyViewers
from packager.playlist import parse_variants

LIVE_TIMEOUT = 30.0  # seconds for every stream to list parts before the load starts


class LoadTest(LowLatencyViewers):
    """One run: set up streams and publishers, run viewers and taggers for ``duration``, report."""

    def __init__(self, options: LoadTestOptions, out: TextIO = sys.stderr) -> None:
        self.o = options
        self.out = out
        self.run_id = secrets.token_hex(3)
        self.streams: list[str] = []
        self.created: list[str] = []
        self.publishers: list[Publisher] = []
        self.delivery: list[float] = []  # part listed (reload returned) → part bytes received
        self.playlist_wait: list[float] = []  # blocking reload held
        self.report_lag: list[int] = []  # sibling rendition report behind ours, in parts
        self.tags: dict[str, TagRecord] = {}
        self.tag_post: list[float] = []
        self.seen_tags: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self.viewers_active = 0
        self.timeline: list[Second] = []
        self.started = 0.0
        self.deadline = 0.0
        self.notes: list[str] = []
        self.generator_cores = 0.0
        self.log: RequestLog
        self.setup: RequestLog

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.o.api_token}"} if self.o.api_token else {}

    def _second(self) -> Second:
        index = max(0, int(time.monotonic() - self.started))
        while len(self.timeline) <= index:
            self.timeline.append(Second())
        return self.timeline[index]

    # -- setup --------------------------------------------------------------------------
    def _rtmp_base(self) -> str:
        base = next((u for u in self.o.rtmp if not has_key(u)), None)
        if base is not None:
            return base.rstrip("/")
        host = urlsplit(self.o.target).hostname or "127.0.0.1"
        return f"rtmp://{host}:1935/live"

    async def _prepare_streams(self) -> list[tuple[str, str]]:
        """(stream id, publish URL) for each publisher; creates streams through the API."""
        pairs: list[tuple[str, str]] = []
        full_urls = [u for u in self.o.rtmp if has_key(u)]
        ids = self.o.streams or ["demo"]
        for i, url in enumerate(full_urls):
            pairs.append((ids[i] if i < len(ids) else ids[-1], url))
        base = self._rtmp_base()
        for i, key in enumerate(self.o.keys[len(pairs) :], start=len(pairs)):
            pairs.append((ids[i] if i < len(ids) else ids[-1], f"{base}/{key}"))
        while len(pairs) < self.o.publishers:
            stream = f"loadtest-{self.run_id}-{len(pairs)}"
            got = await self.setup.request(
                "create_stream",
                "POST",
                f"{self.o.api_base}/api/v1/streams",
                json={"id": stream},
                headers=self.auth,
            )
            if got is None:
                raise RuntimeError(f"could not create stream {stream}: {self._setup_errors()}")
            self.created.append(stream)
            created = json.loads(got[1])
            if self.o.protocol == "srt":
                if not created.get("srt_url"):
                    raise RuntimeError("the target takes no SRT (its streams have no srt_url)")
                # linger: the last packets of a stopped publisher still arrive.
                pairs.append((stream, f"{created['srt_url']}&linger=2"))
                continue
            pairs.append((stream, f"{base}/{created['stream_key']}"))
        return pairs[: self.o.publishers]

    def _setup_errors(self) -> str:
        return json.dumps({k: v.as_dict() for k, v in self.setup.counts.items()})

    async def _wait_live(self, stream: str, deadline: float) -> bool:
        """Until the stream's multivariant playlist answers (its ladder is ready)."""
        url = f"{self.o.target}/hls/{stream}/master.m3u8"
        while time.monotonic() < deadline:
            got = await self.setup.request("wait_live", "GET", url)
            if got is not None and parse_variants(got[1].decode()):
                return True
            await asyncio.sleep(0.25)
        return False

    async def _cleanup(self) -> None:
        for p in self.publishers:
            await p.stop()
        if self.o.keep_streams:
            return
        for stream in self.created:
            await self.setup.request(
                "delete_stream",
                "DELETE",
                f"{self.o.api_base}/api/v1/streams/{stream}",
                headers=self.auth,
            )

    async def scrape(self) -> MetricsSnapshot | None:
        got = await self.setup.request("metrics", "GET", self.o.metrics_url)
        return None if got is None else MetricsSnapshot.parse(got[1].decode(), time.monotonic())

    async def tagger(self) -> None:
        """``--tags-per-second`` on an absolute schedule, round robin over the streams."""
        rate = self.o.tags_per_second
        total = int(rate * self.o.duration)
        posts: list[asyncio.Task[None]] = []

        async def post(i: int) -> None:
            stream = self.streams[i % len(self.streams)]
            sent = time.monotonic()
            body = {"kind": "product", "product_id": f"loadtest-{self.run_id}-{i}"}
            got = await self.log.request(
                "tag_post",
                "POST",
                f"{self.o.api_base}/api/v1/streams/{stream}/tags",
                json=body,
                headers=self.auth,
            )
            acked = time.monotonic()
            if got is None:
                self._second().errors += 1
                return
            self.tag_post.append(acked - sent)
            self.tags[json.loads(got[1])["id"]] = TagRecord(stream, sent, acked)

        for i in range(total):
            delay = self.started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= self.deadline:
                break
            self._second().tags_sent += 1
            posts.append(asyncio.ensure_future(post(i)))
        await asyncio.gather(*posts)

    # -- progress -----------------------------------------------------------------------
    def progress_line(self) -> str:
        elapsed = time.monotonic() - self.started
        running = sum(p.running for p in self.publishers)
        parts = len(self.delivery)
        recent = self.delivery[-500:]
        p95 = f"{percentile(recent, 0.95) * 1000:.0f} ms" if recent else "-"
        visible = sum(1 for i, t in self.tags.items() if i in self.seen_tags[t.stream])
        errors = self.log.totals().failed
        return (
            f"[{elapsed:5.0f}s/{self.o.duration:.0f}s] publishers {running}/{self.o.publishers}"
            f" · viewers {self.viewers_active}/{self.o.viewers} · parts {parts}"
            f" (delivery p95 {p95}) · tags {len(self.tags)} acked, {visible} visible"
            f" · errors {errors}"
        )

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            print(self.progress_line(), file=self.out, flush=True)

    # -- main ---------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            self.log = RequestLog(http, self.o.request_timeout)
            self.setup = RequestLog(http, self.o.request_timeout)
            try:
                return await self._run()
            finally:
                await self._cleanup()

    async def _run(self) -> dict[str, Any]:
        o = self.o
        pairs = await self._prepare_streams()
        ramp = min(0.1 * len(pairs), 10.0) if o.ramp is None else max(o.ramp, 0.0)
        far = time.monotonic() + ramp + o.duration + LIVE_TIMEOUT + 60
        for stream, url in pairs:  # staggered: real publishers do not all connect at once
            publisher = Publisher(stream, url, publisher_command(url, o))
            publisher.start(far)
            self.publishers.append(publisher)
            await asyncio.sleep(ramp / len(pairs))
        self.streams = list(dict.fromkeys([s for s, _ in pairs] or o.streams or ["demo"]))
        live_by = time.monotonic() + LIVE_TIMEOUT
        live = await asyncio.gather(*(self._wait_live(s, live_by) for s in self.streams))
        if not all(live):
            down = [s for s, ok in zip(self.streams, live, strict=True) if not ok]
            stderr = {p.stream: list(p.stderr) for p in self.publishers if p.stream in down}
            raise RuntimeError(f"streams not live within {LIVE_TIMEOUT:.0f} s: {down} {stderr}")
        await asyncio.sleep(o.warm_up)

        before = await self.scrape()
        cpu_before = time.process_time()
        self.started = time.monotonic()
        self.deadline = self.started + o.duration
        progress = asyncio.ensure_future(self._progress()) if o.progress else None
        tasks = [
            asyncio.ensure_future(self.viewer(i, self.streams[i % len(self.streams)]))
            for i in range(o.viewers)
        ]
        if o.tags_per_second:
            tasks += [asyncio.ensure_future(self.watcher(s)) for s in self.streams]
            tasks.append(asyncio.ensure_future(self.tagger()))
        tasks.append(asyncio.ensure_future(asyncio.sleep(o.duration)))  # publishers-only runs
        try:
            # Everything stops issuing at the deadline; in-flight requests get their timeout.
            done, pending = await asyncio.wait(
                tasks, timeout=o.duration + TAG_GRACE + o.request_timeout + 1
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    self.notes.append(f"client task failed: {task.exception()!r}")
        finally:
            if progress is not None:
                progress.cancel()
        elapsed = min(time.monotonic(), self.deadline) - self.started
        wall = time.monotonic() - self.started
        self.generator_cores = (time.process_time() - cpu_before) / wall if wall > 0 else 0.0
        if self.generator_cores > 0.9:
            self.notes.append(
                f"the load generator used {self.generator_cores:.2f} cores (one event loop): "
                "it may be the bottleneck, so the latencies may overstate the target's"
            )
        after = await self.scrape()
        return build_report(self, elapsed, before, after)

    def tag_visibility(self) -> list[float]:
        """POST sent → first blocking playlist response carrying the tag, per visible tag."""
        return [
            self.seen_tags[t.stream][i] - t.sent
            for i, t in self.tags.items()
            if i in self.seen_tags[t.stream]
        ]


async def run_load(
    options: LoadTestOptions, out: TextIO = sys.stderr
) -> tuple[dict[str, Any], LoadTest]:
    """Run the load test and return its report (also used by the benchmarks)."""
    test = LoadTest(options, out)
    return await test.run(), test
