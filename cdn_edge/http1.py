"""The edge's HTTP/1.1 connections: aiohttp's request parser in, prepared bytes out.

The ``asyncio.Protocol`` only moves bytes: requests are parsed by aiohttp's (llhttp) parser
with its size limits, answered strictly in order (pipelining), and the answer is whatever bytes
the handler prepared — no response objects, no task per request. A handler answers at once
(cache hit) or later (``respond`` from the collapsed fetch's completion).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol, cast

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser, HttpVersion10, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD

from cdn_edge.wire import http_date, simple_head
from ingest.shown import REASON_CHARS, cut

#: Parser bounds (aiohttp's defaults): request line and each header field, read buffer.
MAX_LINE, MAX_FIELD, READ_LIMIT = 8190, 8190, 1 << 16
#: Parsed requests waiting behind the one being answered before reading pauses.
MAX_QUEUED = 32
#: A keep-alive connection with nothing in flight is closed after this long (aiohttp's value).
KEEPALIVE_TIMEOUT = 75.0

_END = b"\r\n"
_END_CLOSE = b"Connection: close\r\n\r\n"
_END_KEEP_ALIVE = b"Connection: keep-alive\r\n\r\n"
_Queued = RawRequestMessage | HttpProcessingError


class RequestHandler(Protocol):
    connections: set[EdgeConnection]

    def dispatch(self, conn: EdgeConnection, request: RawRequestMessage) -> None:
        """Answer ``request`` with ``conn.respond`` now or later (exactly once)."""


class EdgeConnection(asyncio.Protocol):
    """One client connection: one request answered at a time, the rest queued in order."""

    def __init__(self, handler: RequestHandler, loop: asyncio.AbstractEventLoop) -> None:
        self._handler = handler
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self._client: str | None = None
        # Request bodies are refused, so their payload stream never needs flow control.
        self._parser = HttpRequestParser(
            BaseProtocol(loop), loop, READ_LIMIT, max_line_size=MAX_LINE, max_field_size=MAX_FIELD
        )
        self._queue: deque[_Queued] = deque()
        self._request: RawRequestMessage | None = None
        self._dispatching = False
        self._write_paused = False
        self._read_paused = False
        self._last = False  # no more requests are read (parse error, upgrade, body)
        self.last_active = loop.time()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self.transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple | list) and peer else ""
        self._handler.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connections.discard(self)
        self.transport = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._last:
            return
        self.last_active = self._loop.time()
        try:
            messages, upgraded, _ = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._queue.append(exc)
            self._last = True
        else:
            for message, payload in messages:
                if payload is not EMPTY_PAYLOAD:
                    self._queue.append(BadHttpMessage("request bodies are not accepted"))
                    self._last = True
                    break
                self._queue.append(message)
            if upgraded:
                self._last = True  # answered as plain HTTP, then closed
        if len(self._queue) > MAX_QUEUED and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        self._next()

    def client(self, request: RawRequestMessage) -> str:
        """Who this connection's viewer is without a token: address and User-Agent."""
        if self._client is None:
            self._client = f"{self.remote}|{request.headers.get('User-Agent', '')}"
        return self._client

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._next()

    # -- answering -----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._request is None and not self._queue

    def respond(self, head: bytes, body: bytes) -> None:
        """Send the answer to the current request: ``head`` (header lines) and ``body``."""
        request, transport = self._request, self.transport
        if request is None or transport is None:
            return  # the client went away while its answer was being fetched
        self._request = None
        if request.should_close or (self._last and not self._queue):
            end = _END_CLOSE
        elif request.version == HttpVersion10:
            end = _END_KEEP_ALIVE
        else:
            end = _END
        if request.method == "HEAD" or not body:
            transport.write(head + end)
        else:
            transport.writelines((head, end, body))
        if end is _END_CLOSE:
            self.close()
        elif not self._dispatching:
            self._next()

    def close(self) -> None:
        self._last = True
        self._queue.clear()
        if self.transport is not None:
            self.transport.close()

    def _next(self) -> None:
        """Hand queued requests to the handler while nothing is in flight and writes flow."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._request is None and self._queue and not self._write_paused:
                item = self._queue.popleft()
                if isinstance(item, HttpProcessingError):
                    self._fail(item)
                    return
                self._request = item
                self._handler.dispatch(self, item)
        finally:
            self._dispatching = False
        if self._read_paused and len(self._queue) <= MAX_QUEUED // 2 and self.transport:
            self._read_paused = False
            self.transport.resume_reading()
        if self._last and self.idle:
            self.close()

    def _fail(self, exc: HttpProcessingError) -> None:
        """A request that could not be parsed: 400 (or the parser's 4xx), then close."""
        status = exc.code if 400 <= exc.code < 500 else 400
        # The parser's message quotes the offending request line or header: cut it short.
        body = f"{status}, message: {cut(exc.message, REASON_CHARS)}\n".encode(errors="replace")
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if self.transport is not None:
            self.transport.write(simple_head(status, headers, len(body), http_date()) + _END_CLOSE)
            self.transport.write(body)
        self.close()
