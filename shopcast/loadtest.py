"""``shopcast loadtest``: RTMP publishers, LL-HLS viewers and product tags against an origin or an
edge, then a report (Markdown + JSON): achieved load, latency percentiles, errors, target CPU.

Viewers behave like hls.js in low-latency mode: load the multivariant playlist, pick a rendition,
hold a blocking reload for the next part (``_HLS_msn``/``_HLS_part``, S 6.2.5.2), fetch the parts
it lists, read the rendition reports. Every loop is bounded by ``--duration`` and by a count;
every request is counted once as succeeded or failed (by kind).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import importlib.util
import json
import math
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urljoin, urlsplit

import aiohttp

PROCESS_CPU = "process_cpu_seconds_total"
HUB_DROPPED = "shopcast_hub_dropped_frames_total"
PART_LATENESS = "shopcast_part_publish_lateness_seconds"
PARTS_PUBLISHED = "shopcast_parts_total"
LIVE_TIMEOUT = 30.0  # seconds for every stream to list parts before the load starts
TAG_GRACE = 3.0  # seconds after the run for the last tags to show up
PUBLISHER_RESTARTS = 3  # per publisher: a crashing ffmpeg is restarted this often, no more

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


# -- playlists -----------------------------------------------------------------------------------


def _attributes(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(line.partition(":")[2])}


@dataclass
class MediaPlaylistView:
    """What a low-latency client reads from a media playlist (parts located by counting)."""

    parts: list[tuple[int, int, str]] = field(default_factory=list)  # (msn, index, uri)
    hint: tuple[int, int] | None = None
    part_target: float = 0.0
    reports: list[tuple[str, int, int]] = field(default_factory=list)  # (uri, msn, part)
    dateranges: list[str] = field(default_factory=list)
    ended: bool = False
    can_skip: bool = False  # EXT-X-SERVER-CONTROL has CAN-SKIP-UNTIL (delta updates, S 6.2.5.1)

    @property
    def last(self) -> tuple[int, int] | None:
        return self.parts[-1][:2] if self.parts else None


def parse_media_playlist(text: str) -> MediaPlaylistView:
    """Parts with their (msn, index) by counting from EXT-X-MEDIA-SEQUENCE and EXT-X-SKIP;
    the PRELOAD-HINT's position is the part after the last listed one (S 4.4.5.3)."""
    view = MediaPlaylistView()
    msn = index = 0
    hinted = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.partition(":")[2])
        elif line.startswith("#EXT-X-SKIP:"):
            msn += int(_attributes(line).get("SKIPPED-SEGMENTS", "0"))
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            view.can_skip = "CAN-SKIP-UNTIL" in _attributes(line)
        elif line.startswith("#EXT-X-PART-INF:"):
            view.part_target = float(_attributes(line).get("PART-TARGET", "0"))
        elif line.startswith("#EXT-X-PART:"):
            view.parts.append((msn, index, _attributes(line)["URI"]))
            index += 1
        elif line.startswith("#EXTINF:"):
            pass
        elif line and not line.startswith("#"):  # a segment URI closes its segment
            msn, index = msn + 1, 0
        elif line.startswith("#EXT-X-PRELOAD-HINT:") and _attributes(line).get("TYPE") == "PART":
            hinted = True
        elif line.startswith("#EXT-X-RENDITION-REPORT:"):
            a = _attributes(line)
            view.reports.append((a["URI"], int(a["LAST-MSN"]), int(a.get("LAST-PART", "-1"))))
        elif line.startswith("#EXT-X-DATERANGE:"):
            view.dateranges.append(_attributes(line).get("ID", ""))
        elif line.startswith("#EXT-X-ENDLIST"):
            view.ended = True
    if hinted:
        view.hint = (msn, index)
    return view


def parse_variants(text: str) -> list[tuple[str, int]]:
    """(URI, BANDWIDTH) of each EXT-X-STREAM-INF, in playlist order."""
    out: list[tuple[str, int]] = []
    bandwidth: int | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-STREAM-INF:"):
            bandwidth = int(_attributes(line).get("BANDWIDTH", "0"))
        elif line and not line.startswith("#") and bandwidth is not None:
            out.append((line.strip(), bandwidth))
            bandwidth = None
    return out


# -- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..1); NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize_ms(values: Sequence[float]) -> dict[str, float | int] | None:
    """Count and p50/p95/p99/max in milliseconds of a list of seconds; None when empty."""
    if not values:
        return None
    out: dict[str, float | int] = {"count": len(values)}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        out[f"{name}_ms"] = round(percentile(values, q) * 1000, 1)
    out["max_ms"] = round(max(values) * 1000, 1)
    return out


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket; ``buckets`` are cumulative
    (upper bound, count) pairs sorted by bound, ending with +Inf. None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bound: its value is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class MetricsSnapshot:
    """The figures the load test reads from a target's Prometheus ``/metrics``."""

    at: float
    cpu_seconds: float | None = None
    dropped: dict[str, float] = field(default_factory=dict)  # per stream
    lateness: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)
    parts: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, at: float) -> MetricsSnapshot:
        from prometheus_client.parser import text_string_to_metric_families

        snap = cls(at)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = s.labels
                if s.name == PROCESS_CPU:
                    snap.cpu_seconds = s.value
                elif s.name == HUB_DROPPED:
                    snap.dropped[labels.get("stream", "")] = s.value
                elif s.name == PART_LATENESS + "_bucket":
                    key = (labels.get("stream", ""), labels.get("rendition", ""))
                    snap.lateness.setdefault(key, {})[float(labels["le"])] = s.value
                elif s.name == PARTS_PUBLISHED:
                    snap.parts[(labels.get("stream", ""), labels.get("rendition", ""))] = s.value
        return snap


def _delta(end: float, start: float | None) -> float:
    # A per-session counter starts over when its publisher reconnects: then all of it is new.
    return end if start is None or end < start else end - start


def metrics_delta(
    start: MetricsSnapshot, end: MetricsSnapshot, streams: Iterable[str] | None = None
) -> dict[str, Any]:
    """Target process CPU, hub drops, parts and part lateness between two scrapes; ``streams``
    limits the per-stream figures (None: every stream)."""
    wanted = None if streams is None else set(streams)

    def mine(stream: str) -> bool:
        return wanted is None or stream in wanted

    wall = end.at - start.at
    out: dict[str, Any] = {"wall_seconds": round(wall, 2)}
    if start.cpu_seconds is not None and end.cpu_seconds is not None and wall > 0:
        cpu = end.cpu_seconds - start.cpu_seconds
        out["cpu_seconds"] = round(cpu, 2)
        out["cpu_cores"] = round(cpu / wall, 3)
    dropped = [_delta(v, start.dropped.get(s)) for s, v in end.dropped.items() if mine(s)]
    out["hub_dropped_frames"] = int(sum(dropped))
    out["parts_published"] = int(
        sum(_delta(v, start.parts.get(k)) for k, v in end.parts.items() if mine(k[0]))
    )
    merged: dict[float, float] = collections.defaultdict(float)
    for key, buckets in end.lateness.items():
        if not mine(key[0]):
            continue
        before = start.lateness.get(key, {})
        for bound, count in buckets.items():
            merged[bound] += count - before.get(bound, 0.0)
    cumulative = sorted(merged.items())
    if cumulative and cumulative[-1][1] > 0:
        out["part_lateness"] = {
            "count": int(cumulative[-1][1]),
            **{
                f"{name}_ms": round((histogram_quantile(cumulative, q) or 0.0) * 1000, 1)
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
            "source": f"{PART_LATENESS} histogram, interpolated within buckets",
        }
    return out


# -- request accounting --------------------------------------------------------------------------


@dataclass
class RequestCounts:
    sent: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors),
        }


class RequestLog:
    """Sends HTTP requests and counts each one exactly once: ok, or failed with a kind."""

    def __init__(self, http: aiohttp.ClientSession, timeout: float) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.counts: dict[str, RequestCounts] = collections.defaultdict(RequestCounts)

    async def request(
        self, kind: str, method: str, url: str, **kwargs: Any
    ) -> tuple[int, bytes] | None:
        """(status, body) of a 2xx answer; None (counted by kind) otherwise."""
        counts = self.counts[kind]
        counts.sent += 1
        try:
            async with self.http.request(method, url, timeout=self.timeout, **kwargs) as resp:
                body = await resp.read()
        except asyncio.CancelledError:
            counts.errors["cancelled"] += 1
            raise
        except TimeoutError:
            counts.errors["timeout"] += 1
            return None
        except aiohttp.ClientConnectionError:
            counts.errors["connection"] += 1
            return None
        except aiohttp.ClientError as exc:
            counts.errors[type(exc).__name__] += 1
            return None
        if not 200 <= resp.status < 300:
            counts.errors[f"http_{resp.status}"] += 1
            return None
        counts.ok += 1
        return resp.status, body

    def totals(self) -> RequestCounts:
        total = RequestCounts()
        for c in self.counts.values():
            total.sent += c.sent
            total.ok += c.ok
            total.errors.update(c.errors)
        return total


# -- options -------------------------------------------------------------------------------------


@dataclass
class LoadTestOptions:
    target: str = "http://127.0.0.1:8080"
    api: str | None = None  # control API base; default: the target
    metrics: str | None = None  # /metrics URL; default: target + /metrics
    rtmp: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    api_token: str | None = None
    publishers: int = 0
    viewers: int = 0
    tags_per_second: float = 0.0
    duration: float = 30.0
    source: Path | None = None
    size: str = "360x640"
    fps: int = 30
    rendition: str = "first"  # "first", "lowest", "highest" or a name in the URI
    request_timeout: float = 10.0
    warm_up: float = 2.0
    ramp: float | None = None  # seconds over which publishers start; None: 0.1 s each, ≤ 10 s
    keep_streams: bool = False
    report: Path | None = None
    markdown: Path | None = None
    plots: Path | None = None
    progress: bool = True

    @property
    def api_base(self) -> str:
        return (self.api or self.target).rstrip("/")

    @property
    def metrics_url(self) -> str:
        return self.metrics or self.target.rstrip("/") + "/metrics"


def _split(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def add_loadtest_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``shopcast loadtest`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "loadtest",
        help="drive publishers, LL-HLS viewers and tags against an origin or edge; report",
        description=__doc__,
    )
    p.add_argument("--target", default="http://127.0.0.1:8080", help="origin or edge HTTP base")
    p.add_argument("--api", help="control API base for streams and tags (default: --target)")
    p.add_argument("--metrics", help="Prometheus URL of the target (default: TARGET/metrics)")
    p.add_argument(
        "--rtmp",
        action="append",
        help="publish URL rtmp://HOST:1935/live/KEY, or the base rtmp://HOST:1935/live with "
        "--key (repeatable or comma-separated; default base: the target's host)",
    )
    p.add_argument("--stream", action="append", help="stream id(s) to use (default: demo)")
    p.add_argument("--key", action="append", help="stream key(s), in --stream order")
    p.add_argument("--api-token", help="bearer token: tags, and streams created for publishers")
    p.add_argument("--publishers", type=int, default=0, help="RTMP publishers (ffmpeg)")
    p.add_argument("--viewers", type=int, default=0, help="LL-HLS viewers")
    p.add_argument("--tags-per-second", type=float, default=0.0, help="product tags POSTed per s")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--source", type=Path, help="file replayed with ffmpeg -re -c copy (looped)")
    p.add_argument("--size", default="360x640", help="synthetic testsrc2 size without --source")
    p.add_argument("--fps", type=int, default=30, help="synthetic source frame rate")
    p.add_argument("--rendition", default="first", help="first|lowest|highest|NAME (e.g. 360p)")
    p.add_argument("--request-timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--warm-up", type=float, default=2.0, help="seconds after live, before load")
    p.add_argument(
        "--ramp", type=float, help="seconds over which publishers start (default 0.1 s each)"
    )
    p.add_argument("--keep-streams", action="store_true", help="keep streams created by the run")
    p.add_argument("--report", type=Path, help="write the report as JSON here")
    p.add_argument("--markdown", type=Path, help="write the report as Markdown here")
    p.add_argument("--plots", type=Path, help="directory for PNG plots (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return p


def options_from_args(args: argparse.Namespace) -> LoadTestOptions:
    return LoadTestOptions(
        target=args.target.rstrip("/"),
        api=args.api,
        metrics=args.metrics,
        rtmp=_split(args.rtmp),
        streams=_split(args.stream),
        keys=_split(args.key),
        api_token=args.api_token,
        publishers=args.publishers,
        viewers=args.viewers,
        tags_per_second=args.tags_per_second,
        duration=args.duration,
        source=args.source,
        size=args.size,
        fps=args.fps,
        rendition=args.rendition,
        request_timeout=args.request_timeout,
        warm_up=args.warm_up,
        ramp=args.ramp,
        keep_streams=args.keep_streams,
        report=args.report,
        markdown=args.markdown,
        plots=args.plots,
        progress=not args.quiet,
    )


def check_options(o: LoadTestOptions) -> str | None:
    """Why these options cannot run, or None."""
    if not 0 < o.duration <= 24 * 3600:
        return "--duration must be within (0, 86400] s"
    if min(o.publishers, o.viewers) < 0 or o.tags_per_second < 0:
        return "--publishers, --viewers and --tags-per-second cannot be negative"
    if not (o.publishers or o.viewers or o.tags_per_second):
        return "nothing to do: give --publishers, --viewers or --tags-per-second"
    if o.tags_per_second and not o.api_token:
        return "--tags-per-second needs --api-token"
    explicit = max(len(o.keys), sum(1 for u in o.rtmp if _has_key(u)))
    if o.publishers > explicit and not o.api_token:
        return (
            f"{o.publishers} publisher(s) need {o.publishers} stream key(s): give that many "
            "--key/--rtmp URLs with keys, or --api-token (streams are created for them)"
        )
    if o.publishers and shutil.which("ffmpeg") is None:
        return "publishers need the ffmpeg CLI on PATH"
    if o.source is not None and not o.source.exists():
        return f"--source {o.source} does not exist"
    return None


def _has_key(url: str) -> bool:
    return len([p for p in urlsplit(url).path.split("/") if p]) >= 2


# -- publishers ----------------------------------------------------------------------------------


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
    return [*cmd, "-f", "flv", url]


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


# -- the run -------------------------------------------------------------------------------------


@dataclass
class TagRecord:
    stream: str
    sent: float
    acked: float
    seen: float | None = None


@dataclass
class Second:
    """Per-second client-side throughput (the timeline of the report)."""

    parts: int = 0
    part_bytes: int = 0
    reloads: int = 0
    tags_sent: int = 0
    errors: int = 0


class LoadTest:
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
        base = next((u for u in self.o.rtmp if not _has_key(u)), None)
        if base is not None:
            return base.rstrip("/")
        host = urlsplit(self.o.target).hostname or "127.0.0.1"
        return f"rtmp://{host}:1935/live"

    async def _prepare_streams(self) -> list[tuple[str, str]]:
        """(stream id, publish URL) for each publisher; creates streams through the API."""
        pairs: list[tuple[str, str]] = []
        full_urls = [u for u in self.o.rtmp if _has_key(u)]
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
            pairs.append((stream, f"{base}/{json.loads(got[1])['stream_key']}"))
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

    # -- viewers ------------------------------------------------------------------------
    def _pick(self, variants: list[tuple[str, int]]) -> str:
        choice = self.o.rendition
        if choice == "lowest":
            return min(variants, key=lambda v: v[1])[0]
        if choice == "highest":
            return max(variants, key=lambda v: v[1])[0]
        if choice != "first":
            named = [uri for uri, _ in variants if choice in uri]
            if named:
                return named[0]
        return variants[0][0]

    async def _open(self, kind: str, stream: str) -> tuple[str, MediaPlaylistView] | None:
        """Multivariant → the chosen rendition's playlist URL and first view."""
        master = f"{self.o.target}/hls/{stream}/master.m3u8"
        for _ in range(20):
            if time.monotonic() >= self.deadline:
                return None
            got = await self.log.request(f"{kind}_master", "GET", master)
            variants = parse_variants(got[1].decode()) if got else []
            if variants:
                url = urljoin(master, self._pick(variants))
                got = await self.log.request(f"{kind}_playlist", "GET", url)
                if got is not None:
                    return url, parse_media_playlist(got[1].decode())
            self._second().errors += 1
            await asyncio.sleep(0.5)
        return None

    async def viewer(self, index: int, stream: str) -> None:
        """An hls.js-like low-latency viewer: blocking reload, then the parts it lists."""
        opened = await self._open("viewer", stream)
        if opened is None:
            return
        url, view = opened
        self.viewers_active += 1
        try:
            # Start at the live edge: the newest part is fetched, older ones are not.
            last = view.parts[-2][:2] if len(view.parts) >= 2 else None
            cap = int(self.o.duration * 50) + 100  # ≥ 10× the reloads 1/3 s parts need
            for _ in range(cap):
                new = [p for p in view.parts if last is None or p[:2] > last]
                listed = time.monotonic()
                for msn, idx, uri in new:
                    if time.monotonic() >= self.deadline:
                        return
                    got = await self.log.request("part", "GET", urljoin(url, uri))
                    sec = self._second()
                    if got is None:
                        sec.errors += 1
                        continue
                    self.delivery.append(time.monotonic() - listed)
                    sec.parts += 1
                    sec.part_bytes += len(got[1])
                    last = (msn, idx)
                if view.ended or time.monotonic() >= self.deadline:
                    return
                view = await self._reload("reload", url, view, self.playlist_wait, view.can_skip)
                self._note_reports(view)
        finally:
            self.viewers_active -= 1

    async def _reload(
        self,
        kind: str,
        url: str,
        view: MediaPlaylistView,
        waits: list[float] | None,
        skip: bool = False,
    ) -> MediaPlaylistView:
        """The blocking reload for the hinted part (S 6.2.5.2); a plain reload after a failure."""
        if view.hint is None:
            got = await self.log.request(kind, "GET", url)
        else:
            msn, part = view.hint
            start = time.monotonic()
            query = f"_HLS_msn={msn}&_HLS_part={part}"
            if skip:  # hls.js asks for a delta update when the playlist offers CAN-SKIP-UNTIL
                query += "&_HLS_skip=YES"
            got = await self.log.request(kind, "GET", f"{url}?{query}")
            if got is not None and waits is not None:
                waits.append(time.monotonic() - start)
        sec = self._second()
        if got is None:
            sec.errors += 1
            await asyncio.sleep(min(0.5, max(view.part_target, 0.1)))
            return dataclasses.replace(view, hint=None)  # retry with a plain reload
        sec.reloads += 1
        return parse_media_playlist(got[1].decode())

    def _note_reports(self, view: MediaPlaylistView) -> None:
        if view.last is None or not view.reports:
            return
        per_segment = max(1, round(2.0 / view.part_target)) if view.part_target else 6
        msn, part = view.last
        for _, r_msn, r_part in view.reports:
            self.report_lag.append((msn - r_msn) * per_segment + part - r_part)

    # -- tags ---------------------------------------------------------------------------
    async def watcher(self, stream: str) -> None:
        """Holds blocking reloads on one rendition and notes when each DATERANGE ID shows up."""
        opened = await self._open("watcher", stream)
        if opened is None:
            return
        url, view = opened
        seen = self.seen_tags[stream]
        end = self.deadline + TAG_GRACE
        for _ in range(int((self.o.duration + TAG_GRACE) * 50) + 100):
            now = time.monotonic()
            for tag_id in view.dateranges:
                seen.setdefault(tag_id, now)
            pending = [t for i, t in self.tags.items() if t.stream == stream and i not in seen]
            if now >= end or view.ended or (now >= self.deadline and not pending):
                return
            view = await self._reload("watcher_reload", url, view, None)

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
        return self.build_report(elapsed, before, after)

    # -- report -------------------------------------------------------------------------
    def tag_visibility(self) -> list[float]:
        """POST sent → first blocking playlist response carrying the tag, per visible tag."""
        return [
            self.seen_tags[t.stream][i] - t.sent
            for i, t in self.tags.items()
            if i in self.seen_tags[t.stream]
        ]

    def build_report(
        self, elapsed: float, before: MetricsSnapshot | None, after: MetricsSnapshot | None
    ) -> dict[str, Any]:
        o = self.o
        visibility = self.tag_visibility()
        tag_sent = self.log.counts["tag_post"].sent if o.tags_per_second else 0
        totals = self.log.totals()
        if before is not None and after is not None:
            target: dict[str, Any] = metrics_delta(before, after, self.streams)
        else:
            target = {"error": f"no Prometheus metrics at {o.metrics_url}"}
        part_rate = len(self.delivery) / elapsed if elapsed > 0 else 0.0
        report: dict[str, Any] = {
            "target": o.target,
            "run_id": self.run_id,
            "duration_s": {"requested": o.duration, "achieved": round(elapsed, 2)},
            "load": {
                "publishers": {
                    "requested": o.publishers,
                    "running_at_end": sum(p.running for p in self.publishers),
                    "exits": sum(len(p.exits) for p in self.publishers),
                    "source": str(o.source) if o.source else f"testsrc2 {o.size}@{o.fps}",
                },
                "viewers": {
                    "requested": o.viewers,
                    "parts_per_second": round(part_rate, 2),
                    "parts_per_second_per_viewer": round(part_rate / o.viewers, 2)
                    if o.viewers
                    else None,
                },
                "tags_per_second": {
                    "requested": o.tags_per_second,
                    "achieved": round(tag_sent / elapsed, 2) if elapsed > 0 else 0.0,
                },
            },
            "streams": self.streams,
            "latency": {
                "server_added_part_lateness": target.get("part_lateness"),
                "part_delivery": summarize_ms(self.delivery),
                "playlist_wait": summarize_ms(self.playlist_wait),
                "tag_post": summarize_ms(self.tag_post),
                "tag_visible": summarize_ms(visibility),
            },
            "tags": {
                "sent": tag_sent,
                "accepted": len(self.tags),
                "visible": len(visibility),
                "not_visible": len(self.tags) - len(visibility),
            },
            "rendition_reports": {
                "samples": len(self.report_lag),
                "lag_parts_max": max(self.report_lag, default=None),
            },
            "requests": {k: v.as_dict() for k, v in sorted(self.log.counts.items())},
            "requests_total": totals.as_dict(),
            "setup_requests": {k: v.as_dict() for k, v in sorted(self.setup.counts.items())},
            "target_process": target,
            "load_generator": {"cpu_cores": round(self.generator_cores, 3)},
            "timeline": [s.__dict__ for s in self.timeline],
            "notes": self.notes,
        }
        return report


# -- output --------------------------------------------------------------------------------------


def _fmt_latency(name: str, s: dict[str, Any] | None) -> str:
    if not s:
        return f"| {name} | – | – | – | – | – |"
    return (
        f"| {name} | {s['count']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} "
        f"| {s.get('max_ms', '–')} |"
    )


def render_markdown(report: dict[str, Any]) -> str:
    load, lat, tp = report["load"], report["latency"], report["target_process"]
    pub, view, tags = load["publishers"], load["viewers"], load["tags_per_second"]
    lines = [
        f"# shopcast loadtest — {report['target']}",
        "",
        f"Duration {report['duration_s']['achieved']} s of {report['duration_s']['requested']} s"
        f" requested; streams: {', '.join(report['streams'])}.",
        "",
        "## Load: achieved vs requested",
        "",
        "| load | requested | achieved |",
        "|---|---|---|",
        f"| RTMP publishers ({pub['source']}) | {pub['requested']} | "
        f"{pub['running_at_end']} running at the end, {pub['exits']} exits |",
        f"| LL-HLS viewers | {view['requested']} | {view['parts_per_second']} parts/s "
        f"({view['parts_per_second_per_viewer']} per viewer) |",
        f"| product tags/s | {tags['requested']} | {tags['achieved']} |",
        "",
        "## Latency (ms)",
        "",
        "| figure | count | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
        _fmt_latency(
            "server-added: part's last frame in → part listed (target)",
            lat["server_added_part_lateness"],
        ),
        _fmt_latency("part delivery: part listed → its bytes received", lat["part_delivery"]),
        _fmt_latency("playlist wait: blocking reload held", lat["playlist_wait"]),
        _fmt_latency("tag POST round trip", lat["tag_post"]),
        _fmt_latency("tag visible: POST sent → DATERANGE in a playlist", lat["tag_visible"]),
        "",
        f"Tags: {report['tags']['sent']} sent, {report['tags']['accepted']} accepted, "
        f"{report['tags']['visible']} visible, {report['tags']['not_visible']} never visible.",
        "",
        "## Requests",
        "",
        "| kind | sent | ok | failed | errors by kind |",
        "|---|---|---|---|---|",
    ]
    for kind, c in [*report["requests"].items(), ("**total**", report["requests_total"])]:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(c["errors"].items())) or "–"
        lines.append(f"| {kind} | {c['sent']} | {c['ok']} | {c['failed']} | {errors} |")
    lines += ["", "## Target process (from its /metrics)", ""]
    if "error" in tp:
        lines.append(tp["error"])
    else:
        lines.append(
            f"CPU {tp.get('cpu_seconds', '–')} s over {tp['wall_seconds']} s = "
            f"{tp.get('cpu_cores', '–')} cores; hub dropped frames {tp['hub_dropped_frames']}; "
            f"parts published {tp['parts_published']}."
        )
    lines.append(
        f"\nLoad generator (this process): {report['load_generator']['cpu_cores']} cores "
        "(ffmpeg publishers not included)."
    )
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note}")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], samples: dict[str, list[float]], folder: Path) -> list[str]:
    """Latency CDFs and throughput over time as PNG, when matplotlib is importable."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in samples.items():
        if values:
            ordered = sorted(v * 1000 for v in values)
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction")
    ax.set_title("latency CDFs")
    ax.legend()
    path = folder / "latency_cdf.png"
    fig.savefig(path, dpi=100)
    written.append(str(path))
    fig, ax = plt.subplots(figsize=(7, 4))
    timeline = report["timeline"]
    for key in ("parts", "reloads", "tags_sent", "errors"):
        ax.plot(range(len(timeline)), [s[key] for s in timeline], label=key)
    ax.set_xlabel("second")
    ax.set_ylabel("per second")
    ax.set_title("throughput")
    ax.legend()
    path = folder / "throughput.png"
    fig.savefig(path, dpi=100)
    written.append(str(path))
    plt.close("all")
    return written


async def run_load(
    options: LoadTestOptions, out: TextIO = sys.stderr
) -> tuple[dict[str, Any], LoadTest]:
    """Run the load test and return its report (also used by the benchmarks)."""
    test = LoadTest(options, out)
    return await test.run(), test


def run_loadtest(args: argparse.Namespace, run: Callable[[Any], Any] = asyncio.run) -> int:
    """``shopcast loadtest``: run, print the Markdown report, write the files asked for."""
    options = options_from_args(args)
    problem = check_options(options)
    if problem is not None:
        print(f"shopcast loadtest: {problem}", file=sys.stderr)
        return 2
    try:
        report, test = run(run_load(options))
    except (RuntimeError, aiohttp.ClientError, OSError) as exc:
        print(f"shopcast loadtest: {exc}", file=sys.stderr)
        return 1
    if options.plots is not None:
        samples = {
            "part delivery": test.delivery,
            "playlist wait": test.playlist_wait,
            "tag visible": test.tag_visibility(),
        }
        report["plots"] = write_plots(report, samples, options.plots)
        if not report["plots"]:
            report["notes"].append("plots skipped: matplotlib is not installed")
    text = render_markdown(report)
    print(text)
    if options.report is not None:
        options.report.write_text(json.dumps(report, indent=2) + "\n")
    if options.markdown is not None:
        options.markdown.write_text(text)
    return 0
