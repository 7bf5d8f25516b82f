"""Outbound HTTP: the ``on_publish`` admission hook and signed webhooks (never blocking media)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ingest.sessions import Publisher
from shopcast.store import TagRecord

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Shopcast-Signature"


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body>`` (the receiver recomputes and compares)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class PublishHook:
    """POSTs ``{"stream_id", "protocol", "peer"}`` before a publisher is accepted.

    2xx admits; any other status, an error or a timeout refuses (fail closed).
    """

    def __init__(self, url: str, timeout: float, secret: str = "") -> None:
        self.url = url
        self.timeout = timeout
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, stream_id: str, publisher: Publisher) -> str | None:
        body = json.dumps(
            {"stream_id": stream_id, "protocol": publisher.protocol, "peer": publisher.peer}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"on_publish hook answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"on_publish hook failed: {type(exc).__name__}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0  # deliveries given up after every retry
    dropped: int = 0  # events that found the queue full
    retries: int = 0


@dataclass
class Webhooks:
    """Queues events and POSTs them, signed, to every configured URL with retries.

    ``emit`` never waits: a full queue drops the event (counted), so a dead receiver can
    slow nothing but its own deliveries.
    """

    urls: tuple[str, ...]
    secret: str
    attempts: int = 5
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    timeout: float = 5.0
    queue_size: int = 1000
    stats: WebhookStats = field(default_factory=WebhookStats)
    _queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = field(default_factory=dict)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if not self.urls:
            return
        if not self._queues:
            # One queue and worker per receiver: a slow one delays only its own deliveries.
            self._session = aiohttp.ClientSession()
            loop = asyncio.get_running_loop()
            for url in self.urls:
                self._queues[url] = asyncio.Queue(self.queue_size)
                self._workers.append(loop.create_task(self._deliver(url)))
        body = json.dumps(
            {
                "id": secrets.token_hex(8),
                "type": event,
                "created_at": time.time(),
                "data": data,
            },
            separators=(",", ":"),
        ).encode()
        for queue in self._queues.values():
            try:
                queue.put_nowait((event, body))
            except asyncio.QueueFull:
                self.stats.dropped += 1

    async def _deliver(self, url: str) -> None:
        queue, session = self._queues[url], self._session
        assert session is not None
        while True:
            event, body = await queue.get()
            headers = {
                "Content-Type": "application/json",
                "X-Shopcast-Event": event,
                SIGNATURE_HEADER: sign(self.secret, body),
            }
            delay = self.backoff
            for attempt in range(self.attempts):
                try:
                    async with session.post(
                        url,
                        data=body,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=self.timeout),
                    ) as resp:
                        if 200 <= resp.status < 300:
                            self.stats.delivered += 1
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if attempt + 1 == self.attempts:
                    self.stats.failed += 1
                    log.warning("webhook %s to %s failed %d times", event, url, self.attempts)
                    break
                self.stats.retries += 1
                await asyncio.sleep(delay)
                delay *= 2

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        if self._session is not None:
            await self._session.close()


class TagWebhooks:
    """Tag events as ``tag.created`` webhooks (a :class:`shopcast.tags.TagListener`)."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    def tag_created(self, record: TagRecord) -> None:
        self.webhooks.emit(
            "tag.created",
            {
                "id": record.id,
                "stream_id": record.stream_id,
                "kind": record.kind,
                "product_id": record.product_id,
                "pts": record.pts,
                "program_date_time": record.program_date_time,
                "source": record.source,
            },
        )

    def tag_clicked(self, stream_id: str, source: str) -> None:
        """Clicks are counted in metrics, not sent one by one."""
