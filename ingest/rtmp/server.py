"""asyncio RTMP server: moves bytes between sockets and the sans-I/O core, nothing more."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import typing
from dataclasses import dataclass, field
from typing import Any

from ingest.media import MediaUnit
from ingest.rtmp.connection import RTMPLimits, RTMPServerConnection
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.events import (
    NEED_DATA,
    ConnectionClosed,
    ConnectRequested,
    DataMessage,
    HandshakeComplete,
    MetaData,
    PublishEnded,
    PublishRequested,
)
from ingest.rtmp.read_pacing import ReadPacer
from ingest.sessions import LiveStreams, PublishRefused, PublishSession, RefusalReason
from ingest.shown import REASON_CHARS, cut, shown

log = logging.getLogger(__name__)
_ids = itertools.count(1)
#: onStatus code of each registry refusal (what ffmpeg, OBS and librtmp have always been sent).
REFUSAL_CODES = {
    RefusalReason.BAD_KEY: "NetStream.Publish.BadName",
    RefusalReason.DUPLICATE: "NetStream.Publish.BadName",
    RefusalReason.HOOK_DENIED: "NetStream.Publish.Rejected",
    RefusalReason.FULL: "NetStream.Publish.Rejected",
}
#: When the key cannot be checked at all (the store is down): the publisher may retry.
UNAVAILABLE_CODE = "NetStream.Publish.Rejected"


@dataclass(frozen=True)
class RTMPServerSettings:
    app: str = "live"
    handshake_timeout: float = 10.0  # connect → publish must finish within this
    idle_timeout: float = 30.0  # no bytes for this long closes the connection
    #: Connections waiting to be accepted (asyncio's default is 100): a reconnect storm beyond
    #: it loses SYNs, and their publishers retry 1 s, 3 s, 7 s … later. The kernel caps it at
    #: net.core.somaxconn.
    backlog: int = 4096
    limits: RTMPLimits = field(default_factory=RTMPLimits)
    #: Once this many publishers are live, each one's socket is read about once per
    #: ``read_pacing`` seconds instead of once per message (see ingest/rtmp/read_pacing.py);
    #: it adds at most about three times that to a frame's way in. 0 turns pacing off.
    read_pacing: float = 0.04
    read_pacing_publishers: int = 64


class _ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['conn']}] {msg}", kwargs  # type: ignore[index]


class RTMPPublisherProtocol(asyncio.Protocol):
    """One RTMP client connection; also the session's :class:`ingest.sessions.Publisher`."""

    protocol = "rtmp"

    def __init__(self, server: RTMPServer) -> None:
        self.server = server
        self.peer = "?"
        self.conn = RTMPServerConnection(limits=server.settings.limits, clock=time.time)
        self.session: PublishSession | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.log = _ConnLog(log, {"conn": f"rtmp#{next(_ids)}"})
        self._last_data = 0.0
        # One handle each, re-armed in place: a connection holds two timers however long it lives.
        self._publish_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._published = False
        self._admitting: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Bytes and reads since the read pacer's last tick.
        self.rx_bytes = 0
        self.rx_reads = 0

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self.transport = typing.cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = f"{host}:{port}"
        self.log.extra["conn"] = f"{self.log.extra['conn']} {self.peer}"  # type: ignore[index]
        self.server.connections.add(self)
        self._loop = loop = asyncio.get_running_loop()
        self._last_data = loop.time()
        settings = self.server.settings
        self._publish_timer = loop.call_later(settings.handshake_timeout, self._check_published)
        self._idle_timer = loop.call_later(settings.idle_timeout / 2, self._check_idle)
        self.log.debug("connected")

    def data_received(self, data: bytes) -> None:
        # The loop is kept: asyncio.get_running_loop() makes a getpid() system call each
        # time, and this runs once per socket read.
        loop = self._loop
        if loop is None:
            self._loop = loop = asyncio.get_running_loop()
        self._last_data = loop.time()
        self.rx_bytes += len(data)
        self.rx_reads += 1
        try:
            self.conn.receive_data(data)
            self._pump()
        except RTMPProtocolError as exc:
            self._fail(f"protocol error: {exc}")

    def eof_received(self) -> bool | None:
        self.conn.receive_data(b"")
        try:
            self._pump()
        except RTMPProtocolError as exc:
            self._fail(f"protocol error: {exc}")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._admitting is not None:
            self._admitting.cancel()
        for timer in (self._publish_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._publish_timer = self._idle_timer = None
        self.server.connections.discard(self)
        self.server.pacer.discard(self)
        if self.session is not None:
            reason = f"connection lost: {exc}" if exc else None
            self.server.streams.end(self.session, reason)
            self.log.info("stream %s offline (%s)", self.session.stream_id, reason or "closed")
            self.session = None

    # -- the core's events -------------------------------------------------------------
    def _pump(self) -> None:
        while not self.closed:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, MediaUnit):
                if self.session is not None:
                    self.session.write(event)
            else:
                self._handle(event)
        self._flush()

    def _handle(self, event: object) -> None:
        if isinstance(event, HandshakeComplete):
            self.log.debug("handshake done (digest=%s)", event.digest)
        elif isinstance(event, ConnectRequested):
            if event.app != self.server.settings.app:
                self.conn.reject_connect(event, f"unknown application {shown(event.app)}")
                self._fail(f"connect to unknown application {shown(event.app)}")
            else:
                self.conn.accept_connect(event)
                self.log.info(
                    "connect tcUrl=%s flashVer=%s", shown(event.tc_url), shown(event.flash_ver)
                )
        elif isinstance(event, PublishRequested):
            self._publish(event)
        elif isinstance(event, MetaData):
            if self.session is not None:
                self.session.stats.set_metadata(event.values)
        elif isinstance(event, DataMessage):
            self.log.debug("data message %s at %d ms", shown(event.name), event.timestamp)
            if self.session is not None:
                for listener in self.server.streams.on_data:
                    listener(self.session, event.name, event.args, event.timestamp)
        elif isinstance(event, PublishEnded):
            if self.session is not None:
                self.log.info("unpublished stream %s", self.session.stream_id)
                self.server.pacer.discard(self)
                self.server.streams.end(self.session, clean=True)
                self.session = None
        elif isinstance(event, ConnectionClosed):
            self._close()

    def _publish(self, event: PublishRequested) -> None:
        if self.session is not None or self._admitting is not None:
            self._fail("second publish on one connection")
            return
        # The key is looked up in the store, then the optional admission hook asks; the core
        # parses nothing more until we answer, so bytes simply wait meanwhile.
        self._admitting = asyncio.ensure_future(self._admit(event))

    async def _admit(self, event: PublishRequested) -> None:
        streams = self.server.streams
        try:
            async with streams.admitting():  # refused at once when full
                stream_id = await streams.resolve(event.stream_name)
                await streams.admit(stream_id, self)
                if not self.closed:
                    # Opened while the place is held, so the publisher count never dips.
                    self._open(event, stream_id)
        except PublishRefused as exc:
            if not self.closed:
                self._refuse(event, exc)
            return
        except Exception as exc:  # the key cannot be checked now (its store is down)
            if not self.closed:
                why = cut(str(exc), REASON_CHARS)
                self.conn.reject_publish(event, code=UNAVAILABLE_CODE, description=why)
                self._fail(f"publish refused: the key cannot be checked now: {why}")
            return
        finally:
            self._admitting = None
        if self.closed:
            return
        try:
            self._pump()
        except RTMPProtocolError as exc:
            self._fail(f"protocol error: {exc}")

    def _refuse(self, event: PublishRequested, exc: PublishRefused) -> None:
        self.conn.reject_publish(event, code=REFUSAL_CODES[exc.reason], description=exc.detail)
        self._fail(f"publish refused: {exc.detail}")

    def _open(self, event: PublishRequested, stream_id: str) -> None:
        try:
            self.session = self.server.streams.open(stream_id, self)
        except PublishRefused as exc:
            self._refuse(event, exc)
            return
        self._published = True
        if self._publish_timer is not None:
            self._publish_timer.cancel()
            self._publish_timer = None
        self.conn.accept_publish(event)
        self.server.pacer.add(self)
        self.log.extra["conn"] = f"{self.log.extra['conn']} stream={self.session.stream_id}"  # type: ignore[index]
        self.log.info("publishing (type=%s)", event.publish_type)

    # -- closing -----------------------------------------------------------------------
    def kick(self, reason: str) -> None:
        """Server-side close (takeover, API kick, shutdown): tell the client why, then close."""
        if self.closed:
            return
        self.session = None  # the registry already ended it
        self.log.info("closing: %s", reason)
        self.conn.end_publish(reason)
        self._flush()
        self._close()

    def _fail(self, reason: str) -> None:
        # Peer strings inside are cut already where they were quoted; this bounds the whole.
        reason = cut(reason, REASON_CHARS)
        self.log.warning("disconnecting: %s", reason)
        if self.session is not None:
            self.server.streams.end(self.session, reason)
            self.session = None
        self._flush()
        self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _check_published(self) -> None:
        self._publish_timer = None
        if not self._published and not self.closed:
            self._fail(f"no publish within {self.server.settings.handshake_timeout:g} s")

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        idle = self.server.settings.idle_timeout
        if loop.time() - self._last_data >= idle:
            self._fail(f"idle for {idle:g} s")
            return
        self._idle_timer = loop.call_later(idle / 2, self._check_idle)


class RTMPServer:
    """Listens for RTMP publishers and hands their streams to :class:`LiveStreams`."""

    def __init__(self, streams: LiveStreams, settings: RTMPServerSettings) -> None:
        self.streams = streams
        self.settings = settings
        self.connections: set[RTMPPublisherProtocol] = set()
        self.pacer = ReadPacer(settings.read_pacing, settings.read_pacing_publishers)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RTMPPublisherProtocol(self), host, port, backlog=self.settings.backlog
        )
        self.pacer.start()
        log.info("RTMP listening on %s:%d", host, self.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, reason: str = "server shutting down") -> None:
        """Stop listening, tell every publisher why, and wait for their sockets to close."""
        if self._server is not None:
            self._server.close()
        self.pacer.close()
        for conn in list(self.connections):
            if conn.session is not None:
                self.streams.end(conn.session, None, clean=True)
            conn.kick(reason)
        for _ in range(50):
            if not self.connections:
                break
            await asyncio.sleep(0.02)
        if self._server is not None:
            await self._server.wait_closed()
