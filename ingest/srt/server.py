"""SRT listener: libsrt sockets in, MPEG-TS demuxed, sessions through :class:`LiveStreams`.

libsrt's sockets are not OS file descriptors, so asyncio cannot watch them. libsrt's own epoll
is driven from the event loop instead: ``SrtPoller.wait`` (GIL released) runs on one dedicated
thread, and everything else — accept, non-blocking receive, close, the demuxer, the sessions —
runs on the loop. One thread serves every SRT socket, and no socket is touched from two threads.
The one exception is read-only: libsrt's listen callback checks the stream id, key, capacity and
duplicate policy during the handshake (on libsrt's thread), so a refused caller is told
``rejected`` with an SRT code; the loop re-checks at accept and runs the async admission hook.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ingest.media import MediaKind, MediaUnit
from ingest.mpegts import (
    NEED_DATA,
    DataDiscarded,
    MPEGTSError,
    ProgramChanged,
    Resynced,
    StreamEnded,
    TSDemuxer,
    TSLimits,
)
from ingest.sessions import (
    LiveStreams,
    PublishRefused,
    PublishSession,
    RefusalReason,
    split_target,
)
from ingest.shown import shown
from ingest.srt.streamid import StreamIdError, parse_stream_id

try:
    from native import libsrt
except ImportError as exc:  # built without libsrt's headers
    libsrt = None  # type: ignore[assignment]
    UNAVAILABLE: str | None = (
        f"SRT ingest is unavailable: the libsrt binding did not load ({exc}); install "
        "Debian's libsrt-openssl-dev and rebuild (make native)"
    )
else:
    UNAVAILABLE = None

if TYPE_CHECKING:
    from native.libsrt import SrtPoller, SrtSocket

log = logging.getLogger(__name__)
_ids = itertools.count(1)
_POLL_MS = 50
_KINDS = {"h264": MediaKind.VIDEO, "hevc": MediaKind.VIDEO, "aac": MediaKind.AUDIO}
#: SRT access-control reject codes (libsrt's access_control.h) a caller is told.
REJECT_BAD_REQUEST = 1400
REJECT_UNAUTHORIZED = 1401
REJECT_OVERLOAD = 1402
REJECT_CONFLICT = 1409
REJECT_DOWN = 1503  # the key cannot be checked now (its store is down): try again later
#: Seconds the handshake waits for the key lookup on the event loop before refusing.
HANDSHAKE_LOOKUP_TIMEOUT = 3.0
#: Bytes a caller may send while the on_publish hook decides (a few seconds of video).
MAX_PENDING = 4 << 20


class SrtUnavailable(RuntimeError):
    """libsrt is missing or the listener could not start."""


@dataclass(frozen=True)
class SrtSettings:
    latency_ms: int = 120
    passphrase: str = ""
    pbkeylen: int = 0  # 0: libsrt's default (16, AES-128) when a passphrase is set
    max_sessions: int = 16
    idle_timeout: float = 30.0  # no media for this long drops the publisher
    limits: TSLimits = field(default_factory=TSLimits)


async def resolve_caller(streams: LiveStreams, raw_stream_id: bytes) -> str:
    """The stream an SRT caller's stream id publishes to; raises ``StreamIdError`` or
    ``PublishRefused`` (an unknown key, or ``r=`` naming a stream the key is not for)."""
    request = parse_stream_id(raw_stream_id)
    stream_id = await streams.resolve(request.key)
    if request.stream_id is not None and request.stream_id != split_target(stream_id)[0]:
        raise PublishRefused(
            RefusalReason.BAD_KEY,
            f"the stream key is not the key of stream {shown(request.stream_id)}",
        )
    return stream_id


class StartGate:
    """Holds the first units until every stream of the program has sent its configuration,
    then releases them in decode-time order.

    MPEG-TS muxers interleave loosely (ffmpeg writes audio PES up to ~0.7 s after the video
    around them); a hub reader that met video long before the audio track existed would plan
    its output without audio. Bounded: ``max_units`` or ``max_span`` seconds of units.
    """

    def __init__(self, max_units: int = 512, max_span: Fraction = Fraction(3)) -> None:
        self.max_units = max_units
        self.max_span = max_span
        self.open = False
        self._expected: set[MediaKind] = set()
        self._held: list[MediaUnit] = []

    def expect(self, kinds: set[MediaKind]) -> None:
        if not self.open:
            self._expected = kinds

    def offer(self, unit: MediaUnit) -> list[MediaUnit]:
        if self.open:
            return [unit]
        self._held.append(unit)
        configured = {u.kind for u in self._held if u.is_config}
        span = self._held[-1].dts * unit.timebase - self._held[0].dts * self._held[0].timebase
        if (
            configured >= self._expected
            or len(self._held) >= self.max_units
            or span > self.max_span
        ):
            return self.release()
        return []

    def release(self) -> list[MediaUnit]:
        """Everything held, in DTS order (a configuration before the frames of its time)."""
        self.open = True
        held, self._held = self._held, []
        return sorted(held, key=lambda u: (u.dts * u.timebase, not u.is_config))


class _ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['conn']}] {msg}", kwargs  # type: ignore[index]


class SrtPublisher:
    """One SRT caller; also the session's :class:`ingest.sessions.Publisher`."""

    protocol = "srt"

    def __init__(self, server: SrtServer, sock: SrtSocket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.demuxer = TSDemuxer(server.settings.limits, clock=time.time)
        self.session: PublishSession | None = None
        self.closed = False
        self.last_data = time.monotonic()
        self.log = _ConnLog(log, {"conn": f"srt#{next(_ids)} {peer}"})
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._admitting: asyncio.Future[None] | None = None
        self._gate = StartGate()
        self._damage = 0

    # --- start -----------------------------------------------------------------------------

    def start(self) -> None:
        # The key is looked up in the store, then the optional admission hook asks; what
        # the caller sends meanwhile waits in _pending.
        self._admitting = asyncio.ensure_future(self._admit())

    async def _admit(self) -> None:
        streams = self.server.streams
        try:
            stream_id = await resolve_caller(streams, self.sock.stream_id)
            await streams.admit(stream_id, self)
        except StreamIdError as exc:
            self.fail(f"publish refused: {exc}")
            return
        except PublishRefused as exc:
            self.fail(f"publish refused: {exc.detail}")
            return
        except Exception as exc:  # the key cannot be checked now (its store is down)
            self.fail(f"publish refused: the key cannot be checked now: {exc}")
            return
        finally:
            self._admitting = None
        if not self.closed:
            self._open(stream_id)

    def _open(self, stream_id: str) -> None:
        try:
            self.session = self.server.streams.open(stream_id, self)
        except PublishRefused as exc:
            self.fail(f"publish refused: {exc.detail}")
            return
        self.log.extra["conn"] = f"{self.log.extra['conn']} stream={stream_id}"  # type: ignore[index]
        self.log.info("publishing")
        pending, self._pending = self._pending, []
        for data in pending:
            self._feed(data)

    # --- media -----------------------------------------------------------------------------

    def readable(self) -> None:
        """Drain what libsrt has for this socket (called on an epoll event)."""
        while not self.closed:
            try:
                data = self.sock.recv()
            except libsrt.SrtError as exc:
                self.lost(str(exc))
                return
            if data is None:
                return
            self.last_data = time.monotonic()
            if self.session is None:
                self._pending.append(data)
                self._pending_bytes += len(data)
                if self._pending_bytes > MAX_PENDING:
                    self.fail(f"more than {MAX_PENDING} bytes before the publish was admitted")
            else:
                self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.demuxer.receive_data(data)
            self._pump()
        except MPEGTSError as exc:
            self.fail(f"MPEG-TS error: {exc}")

    def _pump(self) -> None:
        while (event := self.demuxer.next_event()) is not NEED_DATA:
            if isinstance(event, MediaUnit):
                self._write(self._gate.offer(event))
            elif isinstance(event, ProgramChanged):
                self._gate.expect({_KINDS[s.codec] for s in event.streams if s.codec})
                self.log.info(
                    "program %d v%d: %s",
                    event.program_number,
                    event.version,
                    ", ".join(f"{s.codec} on PID {s.pid}" for s in event.streams),
                )
            elif isinstance(event, Resynced | DataDiscarded):
                self._damage += 1
                # A lossy link can make many: the first few, then every hundredth, are logged.
                if self._damage <= 5 or self._damage % 100 == 0:
                    self.log.info("MPEG-TS damage #%d: %s", self._damage, event)
            elif isinstance(event, StreamEnded):
                self._write(self._gate.release())
                return

    def _write(self, units: list[MediaUnit]) -> None:
        if self.session is not None:
            for unit in units:
                self.session.write(unit)

    # --- closing ---------------------------------------------------------------------------

    def lost(self, reason: str) -> None:
        """The caller disconnected (or libsrt broke the connection)."""
        if self.closed:
            return
        if self.session is not None:
            self.demuxer.receive_data(b"")
            with contextlib.suppress(MPEGTSError):  # ending anyway: keep what was whole
                self._pump()
            self.log.info("stream %s offline (%s)", self.session.stream_id, reason)
            self.server.streams.end(self.session, None)
            self.session = None
        self._close()

    def fail(self, reason: str) -> None:
        """Drop the caller for ``reason`` (logged; the session, if any, ends with it)."""
        if self.closed:
            return
        self.log.warning("disconnecting: %s", reason)
        if self.session is not None:
            self.server.streams.end(self.session, reason)
            self.session = None
        self._close()

    def kick(self, reason: str) -> None:
        """Server-side close (takeover, API kick, shutdown); SRT carries no reason, we log it."""
        if self.closed:
            return
        self.session = None  # the registry already ended it
        self.log.info("closing: %s", reason)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self._admitting is not None:
            self._admitting.cancel()
        self.server.forget(self)
        self.sock.close()


class SrtServer:
    """Listens for SRT callers and hands their streams to :class:`LiveStreams`."""

    def __init__(self, streams: LiveStreams, settings: SrtSettings) -> None:
        self.streams = streams
        self.settings = settings
        self.publishers: dict[int, SrtPublisher] = {}
        self._listener: SrtSocket | None = None
        self._poller: SrtPoller | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="srt-poll")
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where keys are looked up
        self._closing = False
        self.handshake_refusals = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP ``host:port``; :class:`SrtUnavailable` if libsrt is missing or fails."""
        if libsrt is None:
            raise SrtUnavailable(UNAVAILABLE)
        self._loop = asyncio.get_running_loop()
        s = self.settings
        try:
            self._listener = libsrt.SrtSocket.listener(
                host,
                port,
                latency_ms=s.latency_ms,
                passphrase=s.passphrase,
                pbkeylen=s.pbkeylen,
                check=self._handshake_check,
            )
        except (libsrt.SrtError, ValueError) as exc:
            raise SrtUnavailable(f"SRT listener on {host}:{port} failed: {exc}") from exc
        self._poller = libsrt.SrtPoller()
        self._poller.add(self._listener)
        self._task = asyncio.create_task(self._run(self._listener, self._poller), name="srt-poll")
        log.info("SRT listening on %s:%d (latency %d ms)", host, self.port, s.latency_ms)

    @property
    def port(self) -> int:
        return int(self._listener.local_port) if self._listener is not None else 0

    async def _run(self, listener: SrtSocket, poller: SrtPoller) -> None:
        loop = asyncio.get_running_loop()
        next_check = time.monotonic() + 1
        while not self._closing:
            ready = await loop.run_in_executor(self._thread, poller.wait, _POLL_MS)
            for fd, events in ready:
                if fd == listener.fd:
                    try:
                        self._accept(listener, poller)
                    except libsrt.SrtError as exc:  # e.g. the caller vanished meanwhile
                        log.warning("SRT accept failed: %s", exc)
                elif (publisher := self.publishers.get(fd)) is not None:
                    try:
                        if events & libsrt.EPOLL_IN:
                            publisher.readable()
                        if events & libsrt.EPOLL_ERR and not publisher.closed:
                            publisher.lost("connection broken")
                    except Exception as exc:  # a bug drops one caller, never the listener
                        log.exception("SRT caller %s failed", publisher.peer)
                        publisher.fail(f"internal error: {exc!r}")
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1
                self._check_idle()

    def _handshake_check(self, raw: bytes, peer: str) -> int:
        """Refuse during the handshake what can be refused without the event loop (a malformed
        stream id, a wrong key, a full house), so the caller is told ``rejected`` with a code
        instead of seeing its connection drop. Runs on libsrt's thread: the key lookup runs on
        the event loop meanwhile (bounded wait)."""
        assert self._loop is not None
        lookup = asyncio.run_coroutine_threadsafe(resolve_caller(self.streams, raw), self._loop)
        try:
            stream_id = lookup.result(HANDSHAKE_LOOKUP_TIMEOUT)
        except StreamIdError as exc:
            return self._reject(peer, REJECT_BAD_REQUEST, str(exc))
        except PublishRefused as exc:
            return self._reject(peer, REJECT_UNAUTHORIZED, exc.detail)
        except Exception as exc:  # the store is down, or the lookup took too long
            lookup.cancel()
            return self._reject(peer, REJECT_DOWN, f"the key cannot be checked now: {exc!r}")
        if len(self.publishers) >= self.settings.max_sessions:
            return self._reject(peer, REJECT_OVERLOAD, "max_sessions reached")
        if self.streams.on_duplicate == "reject" and stream_id in self.streams.sessions:
            return self._reject(peer, REJECT_CONFLICT, f"stream {stream_id} is live already")
        return 0

    def _reject(self, peer: str, code: int, reason: str) -> int:
        self.handshake_refusals += 1
        log.warning("SRT caller %s refused in the handshake (%d): %s", peer, code, reason)
        return code

    def _accept(self, listener: SrtSocket, poller: SrtPoller) -> None:
        # One per epoll event (level-triggered: more pending callers report again); a second
        # srt_accept with nothing pending would only make libsrt log an error.
        accepted = listener.accept()
        if accepted is not None:
            sock, peer = accepted
            if len(self.publishers) >= self.settings.max_sessions:
                log.warning("SRT caller %s refused: max_sessions reached", peer)
                sock.close()
                return
            publisher = SrtPublisher(self, sock, peer)
            self.publishers[sock.fd] = publisher
            poller.add(sock)
            publisher.start()
            if not publisher.closed:
                publisher.readable()  # data that came with the connection

    def _check_idle(self) -> None:
        now = time.monotonic()
        idle = self.settings.idle_timeout
        for publisher in list(self.publishers.values()):
            if now - publisher.last_data >= idle:
                publisher.fail(f"no data for {idle:g} s")

    def forget(self, publisher: SrtPublisher) -> None:
        if self.publishers.get(publisher.sock.fd) is publisher:
            del self.publishers[publisher.sock.fd]
            if self._poller is not None:
                self._poller.remove(publisher.sock.fd)

    async def close(self, reason: str = "server shutting down") -> None:
        """Stop listening and disconnect every caller."""
        self._closing = True
        if self._task is not None:
            await self._task
        for publisher in list(self.publishers.values()):
            if publisher.session is not None:
                self.streams.end(publisher.session, None, clean=True)  # shutdown: no slate
            publisher.kick(reason)
        if self._listener is not None:
            self._listener.close()
        if self._poller is not None:
            self._poller.close()
        self._thread.shutdown(wait=True)
