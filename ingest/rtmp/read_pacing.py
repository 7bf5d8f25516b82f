"""Fewer, larger socket reads for busy RTMP servers: each publisher's SO_RCVLOWAT sized to its rate.

A phone or OBS writes one RTMP message per frame, and every message then costs one epoll wake-up,
one ``read()`` and one ``data_received`` call, more than parsing it. Once enough publishers are
live for that to matter, the kernel is asked to wake us only when about one pacing interval's worth
of a publisher's bytes has arrived; one shared timer lowers the mark again for any publisher that
had no read during the last two intervals, so a slowing or quiet one (audio only, a last
``deleteStream``) is read at most about three intervals late. End of stream and resets wake the
reader whatever the mark (Linux ``tcp_poll``), and lowering the mark wakes it if bytes wait
(``tcp_set_rcvlowat``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Below this many bytes per interval a publisher is read as bytes come: nothing to gain.
MIN_MARK = 1024
#: The mark never asks for more than this (the kernel caps it at half the receive buffer).
MAX_MARK = 64 * 1024
#: The mark is this share of the bytes a typical interval brings, so reads come about once per
#: interval and the timer's fallback is the exception.
MARK_SHARE = 0.8
#: Intervals without a read before the mark is lowered (a slower stream, or a last small message).
QUIET_INTERVALS = 2
#: Weight of the newest interval in the byte-rate average.
RATE_WEIGHT = 0.25


class PacedConnection(Protocol):
    """What the pacer reads and resets on a connection: its read counters since the last tick."""

    rx_bytes: int
    rx_reads: int
    transport: asyncio.Transport | None


class _Mark:
    """One connection's pacing state."""

    __slots__ = ("mark", "misses", "rate", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.mark = 1  # the kernel's default: wake on any byte
        self.rate = 0.0  # bytes of a typical interval, averaged
        self.misses = 0  # intervals in a row without a read


class ReadPacer:
    """One timer for every publisher of one server; pacing is on while ``min_publishers`` are live.

    ``interval`` bounds the latency it adds: at most about three times it, half of it on average.
    """

    def __init__(self, interval: float, min_publishers: int) -> None:
        self.interval = interval
        self.min_publishers = max(1, min_publishers)
        self.active = False
        self._marks: dict[PacedConnection, _Mark] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self.interval, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._marks.clear()

    def add(self, conn: PacedConnection) -> None:
        """``conn`` publishes now: pace its reads while the server is busy."""
        if self.interval <= 0 or conn.transport is None:
            return
        sock = conn.transport.get_extra_info("socket")
        if sock is None or not hasattr(socket, "SO_RCVLOWAT"):
            return
        conn.rx_bytes = conn.rx_reads = 0
        self._marks[conn] = _Mark(sock)

    def discard(self, conn: PacedConnection) -> None:
        """``conn`` no longer publishes: every byte wakes us again (it may still send commands)."""
        state = self._marks.pop(conn, None)
        transport = conn.transport
        if state is not None and state.mark > 1 and transport and not transport.is_closing():
            self._set(conn, state, 1)

    def mark_of(self, conn: PacedConnection) -> int:
        """The low-water mark the kernel holds for ``conn`` (1: every byte wakes us)."""
        state = self._marks.get(conn)
        return state.mark if state is not None else 1

    def _set(self, conn: PacedConnection, state: _Mark, mark: int) -> None:
        try:
            state.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        except OSError as exc:  # closing under us, or a kernel without it: read as bytes come
            log.debug("SO_RCVLOWAT %d refused (%s): not pacing this connection", mark, exc)
            self._marks.pop(conn, None)
            return
        state.mark = mark

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.interval, self._tick)
        marks = self._marks
        # Hysteresis: on at min_publishers, off again below three quarters of it.
        if self.active:
            self.active = len(marks) * 4 >= self.min_publishers * 3
            if not self.active:
                for conn, state in list(marks.items()):
                    if state.mark > 1:
                        self._set(conn, state, 1)
                    state.rate = 0.0
                return
        elif len(marks) >= self.min_publishers:
            self.active = True
            for conn in marks:  # counted while unpaced: rates are learnt from the next interval
                conn.rx_bytes = conn.rx_reads = 0
            return
        else:
            return
        for conn, state in list(marks.items()):
            if conn.rx_reads == 0:
                state.misses += 1
                # A whole interval or two unread: a slower stream, or a last small message.
                if state.misses >= QUIET_INTERVALS and state.mark > 1:
                    state.rate *= 0.5
                    self._set(conn, state, 1)
                continue
            got = conn.rx_bytes / (state.misses + 1)  # per interval, unread ones included
            conn.rx_bytes = conn.rx_reads = 0
            state.misses = 0
            rate = state.rate
            # Keyframes come in bursts: they may not lift the typical interval's bytes much.
            rate = state.rate = (
                got if rate == 0.0 else rate + RATE_WEIGHT * (min(got, 1.5 * rate) - rate)
            )
            mark = min(int(rate * MARK_SHARE), MAX_MARK)
            if mark < MIN_MARK:
                mark = 1
            # Only a real change is worth a system call.
            if mark * 5 < state.mark * 4 or mark * 4 > state.mark * 5:
                self._set(conn, state, mark)
