"""asyncio RTMP publisher: moves bytes between a socket and the sans-I/O client role, nothing more.

Used by ``shopcast serve --demo`` (its built-in show) and by the tests that publish hand-made
messages (cue points, odd timestamps) to a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from ingest.rtmp.connection import ClientState, RTMPClientConnection, RTMPLimits
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.events import (
    NEED_DATA,
    ClientEvent,
    CommandResult,
    ConnectionClosed,
    StatusReceived,
)

READ_SIZE = 65536


class RTMPPublishError(Exception):
    """The server refused (or dropped) the publisher."""


class RTMPPublisher:
    """Publishes to ``rtmp://host:port/app/key``: :meth:`connect`, media and data, :meth:`close`."""

    def __init__(
        self,
        host: str,
        port: int,
        app: str,
        key: str,
        limits: RTMPLimits | None = None,
        fourcc_list: Sequence[str] = (),
    ) -> None:
        self.host, self.port, self.app, self.key = host, port, app, key
        #: Enhanced RTMP: the video FourCCs offered in ``connect`` (as OBS does), none if empty.
        self.fourcc_list = list(fourcc_list)
        self.connect_info: dict[str, Any] = {}  # the server's answer to ``connect``
        self.conn = RTMPClientConnection(limits, clock=time.time)
        self.statuses: list[StatusReceived] = []  # every onStatus the server sent
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        """Handshake, connect, createStream and publish; raises :class:`RTMPPublishError` when
        the server refuses or closes, ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            self._r, self._w = await asyncio.open_connection(self.host, self.port)
            extra: dict[str, Any] = {"fourCcList": self.fourcc_list} if self.fourcc_list else {}
            self.conn.connect(self.app, f"rtmp://{self.host}:{self.port}/{self.app}", **extra)
            await self._until(self._connected)
            tid = self.conn.create_stream(self.key)
            await self._until(lambda ev: isinstance(ev, CommandResult) and ev.transaction_id == tid)
            self.conn.publish(self.key)
            await self._until(lambda _: self.conn.state is ClientState.PUBLISHING)
        self._reading = asyncio.ensure_future(self._read())

    def _connected(self, ev: ClientEvent) -> bool:
        if isinstance(ev, CommandResult) and ev.transaction_id == 1:
            self.connect_info = ev.info
            return True
        return False

    def _flush(self) -> None:
        assert self._w is not None
        data = self.conn.data_to_send()
        if data:
            self._w.write(data)

    async def _until(self, done: Callable[[ClientEvent], bool]) -> None:
        assert self._r is not None
        while True:
            self._flush()
            ev = self.conn.next_event()
            if ev is NEED_DATA:
                try:
                    self.conn.receive_data(await self._r.read(READ_SIZE))
                except RTMPProtocolError as exc:
                    raise RTMPPublishError(f"the server broke the protocol: {exc}") from None
                continue
            if isinstance(ev, ConnectionClosed):
                raise RTMPPublishError("the server closed the connection")
            if isinstance(ev, CommandResult) and ev.name == "_error":
                raise RTMPPublishError(f"refused: {ev.info or ev.values}")
            if isinstance(ev, StatusReceived):
                self.statuses.append(ev)
                if ev.level == "error":
                    raise RTMPPublishError(f"publish refused: {ev.code} {ev.description}")
            if done(ev):
                return

    async def _read(self) -> None:
        """While publishing: answer pings, acknowledge, keep the statuses; ends at EOF."""
        assert self._r is not None
        with contextlib.suppress(RTMPProtocolError, OSError):
            while data := await self._r.read(READ_SIZE):
                self.conn.receive_data(data)
                while isinstance(ev := self.conn.next_event(), StatusReceived | CommandResult):
                    if isinstance(ev, StatusReceived):
                        self.statuses.append(ev)
                self._flush()
                if self.conn.state is ClientState.CLOSED:  # an error onStatus: we were ended
                    return

    @property
    def closed(self) -> bool:
        """The server closed the connection or ended the publish."""
        return self._reading is not None and self._reading.done()

    def _check_open(self) -> None:
        if self._w is None or self.closed or self.conn.state is not ClientState.PUBLISHING:
            raise RTMPPublishError("the server closed the connection or ended the publish")

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Write an audio (8) or video (9) message carrying an FLV tag body."""
        self._check_open()
        self.conn.send_media(type_id, timestamp, payload)
        self._flush()

    def send_data(self, *values: Any, timestamp: int) -> None:
        """Write an AMF0 data message (``onCuePoint``, ``@setDataFrame`` …) at ``timestamp`` ms."""
        self._check_open()
        self.conn.send_data(*values, timestamp=timestamp)
        self._flush()

    async def drain(self) -> None:
        """Wait until the socket's buffer is below its high-water mark."""
        self._check_open()
        assert self._w is not None
        await self._w.drain()

    async def close(self) -> None:
        """Unpublish (when publishing) and close the connection."""
        if self._w is not None:
            with contextlib.suppress(Exception):
                if self.conn.state is ClientState.PUBLISHING:
                    self.conn.unpublish(self.key)
                    self._flush()
                    await self._w.drain()
            self._w.close()
            with contextlib.suppress(Exception):
                await self._w.wait_closed()
        if self._reading is not None:
            self._reading.cancel()
