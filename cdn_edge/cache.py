"""Byte-bounded LRU of upstream responses, and their freshness from Cache-Control."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

from cdn_edge.wire import ResponseHead

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*(\d+)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache|private)\b", re.IGNORECASE)
#: Errors without a Cache-Control of their own are kept this long (S Appendix B: short).
ERROR_TTL = 1.0
#: Bookkeeping per entry counted on top of the body (key, headers, object, rendered head).
_OVERHEAD = 512
#: What a body without a Content-Type is served as (aiohttp's default for bytes).
DEFAULT_TYPE = "application/octet-stream"


@dataclass
class CachedResponse:
    """An origin response as the edge replays it (``headers`` as served, but for Age)."""

    status: int
    headers: dict[str, str]
    body: bytes
    received: float  # monotonic clock
    age: float = 0.0  # the origin's Age when it arrived
    ttl: float = 0.0  # freshness lifetime left on arrival (0: not stored)
    size: int = field(init=False)
    head: ResponseHead = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.size = (
            len(self.body) + _OVERHEAD + sum(len(k) + len(v) for k, v in self.headers.items())
        )
        served = [(k, v) for k, v in self.headers.items() if k != "Age"]
        if "Content-Type" not in self.headers:
            served.append(("Content-Type", DEFAULT_TYPE))
        self.head = ResponseHead(self.status, served, len(self.body))

    def fresh(self, now: float) -> bool:
        return now - self.received < self.ttl


def freshness(status: int, cache_control: str | None, age: float) -> float:
    """Seconds a response may be served from cache (RFC 9111 4.2.1; errors stay short)."""
    cc = cache_control or ""
    if _NO_STORE.search(cc):
        return 0.0
    match = _MAX_AGE.search(cc)
    if status >= 400:
        return max(float(match.group(1)) - age, 0.0) if match else ERROR_TTL
    if status not in (200, 203, 204, 301, 404, 410) or match is None:
        return 0.0
    return max(float(match.group(1)) - age, 0.0)


class ResponseCache:
    """LRU by bytes: the least recently served entries go first once ``capacity`` is exceeded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._entries: OrderedDict[str, CachedResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not entry.fresh(now):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedResponse, now: float) -> bool:
        """Store ``entry`` if it is fresh and fits; evict expired, then least recent, entries."""
        if key in self._entries:
            self._drop(key)
        if not entry.fresh(now) or entry.size > self.capacity:
            return False
        self._entries[key] = entry
        self.size += entry.size
        if self.size > self.capacity:
            for stale in [k for k, e in self._entries.items() if not e.fresh(now)]:
                self._drop(stale)
        while self.size > self.capacity:
            self._drop(next(iter(self._entries)))
        return True

    def _drop(self, key: str) -> None:
        self.size -= self._entries.pop(key).size
