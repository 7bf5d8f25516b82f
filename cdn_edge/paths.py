"""Which request targets the edge forwards, and the cache key each one maps to (no I/O)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from packager.access import TOKEN_PARAM
from packager.playlist import PlaylistSyntaxError, parse_media_playlist

# Names the origin hands out: stream ids like the store's, renditions ("360p"), files
# ("12.3.m4s", "init.mp4", "index.m3u8"). Matched on the *raw* target, so percent-encoding
# (%2e%2e, %2f) never matches and never reaches the origin.
_NAME = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}"
_STREAM = r"[a-z0-9][a-z0-9_-]{0,63}"
_HLS = re.compile(rf"^/hls/(?P<stream>{_STREAM})/(?:master\.m3u8|poster\.jpg|{_NAME}/{_NAME})$")
#: Recordings (``/vod/<recording id>/…``): ids are 22 URL-safe characters (128 random bits).
_VOD = re.compile(
    rf"^/vod/(?P<stream>[A-Za-z0-9_-]{{22}})/(?:master\.m3u8|poster\.jpg|{_NAME}/{_NAME})$"
)
_PAGES = re.compile(rf"^/(?:demo/{_STREAM}|static/{_NAME}|replay/[A-Za-z0-9_-]{{22}})$")
#: A replay page's data: the recording's tags, behind the recording's (``vod``) token.
_REPLAY_DATA = re.compile(r"^/replay/(?P<stream>[A-Za-z0-9_-]{22})/data\.json$")
#: Clips of product moments (``/clips/<clip id>.mp4``): public like on the origin, immutable.
_CLIP = re.compile(r"^/clips/[A-Za-z0-9_-]{22}\.mp4$")
#: One byte range (RFC 9110 14.1.2); anything else (several ranges, other units) is ignored.
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
#: Query parameters that select a different response (LLHLS_RULES "Caching").
HLS_PARAMS = ("_HLS_msn", "_HLS_part", "_HLS_skip")
_SKIP_VALUES = {"YES", "v2"}


@dataclass(frozen=True)
class Target:
    """A request the edge may serve: the path, the HLS parameters that select the response."""

    path: str
    stream: str | None  # None for the pages and their assets; a recording id under /vod
    params: tuple[tuple[str, str], ...]
    token: str | None
    scope: str = "hls"  # or "vod": what a playback token is minted for; "clip" needs none

    @property
    def is_playlist(self) -> bool:
        return self.path.endswith(".m3u8")

    def upstream(self, token: str | None) -> str:
        """Path and query to ask the origin for (only the parameters that matter)."""
        params = list(self.params)
        if token:
            params.append((TOKEN_PARAM, token))
        return f"{self.path}?{urlencode(params)}" if params else self.path


class BadTarget(ValueError):
    """Not something the edge forwards (the message goes into the 4xx body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_target(raw: str) -> Target:
    """Check a raw request target (path + query, still percent-encoded) or raise BadTarget."""
    path, _, query = raw.partition("?")
    if ".." in path or "//" in path:
        raise BadTarget(404, "no such path")
    hls = _HLS.match(path)
    scope = "hls"
    if hls is None and (hls := _VOD.match(path) or _REPLAY_DATA.match(path)) is not None:
        scope = "vod"
    if hls is None and _CLIP.match(path) is not None:
        return Target(path, None, (), None, "clip")  # the query selects nothing
    if hls is None and _PAGES.match(path) is None:
        raise BadTarget(404, "no such path")
    values = dict(parse_qsl(query, keep_blank_values=True))
    params: list[tuple[str, str]] = []
    if hls is not None and scope == "hls" and path.endswith("/index.m3u8"):
        for name in HLS_PARAMS:
            value = values.get(name)
            if value is None:
                continue
            digits = value.isascii() and value.isdigit()  # "²" is a digit int() refuses
            valid = value in _SKIP_VALUES if name == "_HLS_skip" else digits
            if not valid or len(value) > 19:
                raise BadTarget(400, f"{name} must be a decimal integer")
            params.append((name, value))
    token = values.get(TOKEN_PARAM) if hls is not None else None
    stream = hls.group("stream") if hls else None
    return Target(path, stream, tuple(params), token or None, scope)


def cache_key(target: Target, token_in_key: bool) -> str:
    """Path + HLS parameters; the viewer's token too when the origin checks it per request."""
    return target.upstream(target.token if token_in_key else None)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks of a ``size``-byte object as (first, last) inclusive;
    None to serve it whole (no header, several ranges, not bytes); (size, size) when no byte of
    it is in the object (416)."""
    match = _RANGE.match(header.strip()) if header and len(header) <= 64 else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        count = int(last)
        return (max(size - count, 0), size - 1) if count and size else (size, size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored (RFC 9110 14.1.1)
    if start >= size:
        return (size, size)
    return start, min(int(last), size - 1) if last else size - 1


def preload_hints(playlist_path: str, text: str) -> list[str]:
    """Raw targets of the playlist's ``#EXT-X-PRELOAD-HINT`` URIs, resolved against its path."""
    base = posixpath.dirname(playlist_path)
    try:
        hints = parse_media_playlist(text).preload_hints
    except PlaylistSyntaxError:
        return []  # the playlist is served as the origin sent it; only the prefetch is skipped
    out = []
    for kind, uri in hints:
        if kind not in ("PART", "MAP"):
            continue
        if "://" in uri:
            continue  # only same-origin relative hints
        out.append(uri if uri.startswith("/") else f"{base}/{uri}")
    return out
