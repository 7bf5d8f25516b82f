"""Simulated LL-HLS viewers (what hls.js does in low-latency mode) and an origin access log."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from packager.playlist import parse_media_playlist

HLS_PARAMS = ("_HLS_msn", "_HLS_part", "_HLS_skip")


def object_key(path: str, query: dict[str, str]) -> str:
    """What a cache keys on: the path and the LL-HLS parameters (no token)."""
    params = "&".join(f"{k}={query[k]}" for k in HLS_PARAMS if k in query)
    return f"{path}?{params}" if params else path


@dataclass
class Access:
    key: str
    status: int
    user_agent: str
    sha: str
    at: float
    size: int = 0


@dataclass
class AccessLog:
    """Every request the origin answered (installed as an aiohttp middleware on its app)."""

    entries: list[Access] = field(default_factory=list)

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        resp = await handler(request)
        body = resp.body if isinstance(resp, web.Response) else None
        data = body if isinstance(body, bytes) else b""
        self.entries.append(
            Access(
                object_key(request.path, dict(request.query)),
                resp.status,
                request.headers.get("User-Agent", ""),
                hashlib.sha256(data).hexdigest(),
                time.time(),
                len(data),
            )
        )
        return resp

    def from_edge(self, agent: str = "shopcast-edge") -> list[Access]:
        return [a for a in self.entries if a.user_agent.startswith(agent)]

    def counts(self, agent: str = "shopcast-edge") -> Counter[str]:
        return Counter(a.key for a in self.from_edge(agent))

    def part_digests(self) -> dict[str, str]:
        """Part path → sha256 of what the origin sent (200s only)."""
        return {a.key: a.sha for a in self.entries if a.status == 200 and a.key.endswith(".m4s")}

    def answered_at(self) -> dict[str, float]:
        """Object key → when the origin first answered it with a 200."""
        out: dict[str, float] = {}
        for a in self.entries:
            if a.status == 200:
                out.setdefault(a.key, a.at)
        return out

    def part_sizes(self) -> dict[str, int]:
        """Part path → bytes the origin sent (200s only)."""
        return {a.key: a.size for a in self.entries if a.status == 200 and a.key.endswith(".m4s")}

    def part_ready_at(self) -> dict[str, float]:
        """Part path → when the origin first sent it."""
        out: dict[str, float] = {}
        for a in self.entries:
            if a.status == 200 and a.key.endswith(".m4s"):
                out.setdefault(a.key, a.at)
        return out


@dataclass
class PartGot:
    msn: int
    index: int
    path: str
    sha: str
    at: float


@dataclass
class SimViewer:
    """Loads the media playlist, then loops: blocking reload for the next part, fetch new parts."""

    http: aiohttp.ClientSession
    base: str  # e.g. http://127.0.0.1:8081
    playlist: str  # e.g. /hls/demo/180p/index.m3u8
    user_agent: str
    token: str | None = None
    got: list[PartGot] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reload_times: list[float] = field(default_factory=list)
    #: (object key of a blocking reload, when it was sent, when its response arrived)
    reloads: list[tuple[str, float, float]] = field(default_factory=list)

    def _url(self, path: str, **params: int) -> str:
        query = [f"{k}={v}" for k, v in params.items()]
        if self.token and "token=" not in path:
            query.append(f"token={self.token}")
        return f"{self.base}{path}" + ("?" + "&".join(query) if query else "")

    async def _get(self, url: str) -> tuple[int, bytes]:
        async with self.http.get(url, headers={"User-Agent": self.user_agent}) as resp:
            return resp.status, await resp.read()

    async def run(self, until: float) -> None:
        directory = self.playlist.rsplit("/", 1)[0]
        want: tuple[int, int] | None = None
        last: tuple[int, int] | None = None
        while time.monotonic() < until:
            try:
                if want is None:
                    status, body = await self._get(self._url(self.playlist))
                else:
                    started, sent = time.monotonic(), time.time()
                    status, body = await self._get(
                        self._url(self.playlist, _HLS_msn=want[0], _HLS_part=want[1])
                    )
                    self.reload_times.append(time.monotonic() - started)
                    key = f"{self.playlist}?_HLS_msn={want[0]}&_HLS_part={want[1]}"
                    self.reloads.append((key, sent, time.time()))
                if status != 200:
                    self.errors.append(f"playlist {want}: HTTP {status}")
                    want = None
                    await asyncio.sleep(0.25)
                    continue
                view = parse_media_playlist(body.decode())
                parts, hint = view.parts, view.hint
                if last is None and view.map_uri is not None:
                    status, _ = await self._get(self._url(f"{directory}/{view.map_uri}"))
                    if status != 200:
                        self.errors.append(f"init: HTTP {status}")
                if last is None and parts:
                    last = (parts[-1][0], parts[-1][1] - 1)  # start at the live edge
                for msn, index, uri in parts:
                    if last is not None and (msn, index) <= last:
                        continue
                    path = f"{directory}/{uri.split('?')[0]}"
                    status, data = await self._get(self._url(f"{directory}/{uri}"))
                    if status != 200:
                        self.errors.append(f"part {path}: HTTP {status}")
                        break
                    sha = hashlib.sha256(data).hexdigest()
                    self.got.append(PartGot(msn, index, path, sha, time.time()))
                    last = (msn, index)
                want = hint
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                want = None
                await asyncio.sleep(0.25)

    def reload_lateness(self, origin_answered: dict[str, float]) -> list[float]:
        """Seconds each blocking reload reached this viewer after it could have: after the origin
        answered it, or after the viewer asked if that was later (then it was a cache hit)."""
        return [
            done - max(sent, origin_answered[k])
            for k, sent, done in self.reloads
            if k in origin_answered
        ]

    def gaps(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Consecutive parts that do not follow one another (same segment +1, or next from 0)."""
        pairs = zip(self.got, self.got[1:], strict=False)
        return [
            ((a.msn, a.index), (b.msn, b.index))
            for a, b in pairs
            if not follows((a.msn, a.index), (b.msn, b.index))
        ]


def follows(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether part ``b`` (msn, index) comes right after ``a``: same segment +1, or next from 0."""
    return b in ((a[0], a[1] + 1), (a[0] + 1, 0))


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(url.partition("?")[2]))
