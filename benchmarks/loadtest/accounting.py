"""Client-side accounting: every request counted once (ok or failed by kind), and the per-second
throughput timeline of the report."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

import aiohttp


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
