"""Live publish sessions: who publishes which stream, its hub, and what the ingest looks like.

Protocol-neutral: the RTMP server and the WHIP endpoint ask :class:`LiveStreams` to start a
session, writes media units into it and ends it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ingest.codecs import (
    Av1Config,
    BitstreamError,
    HevcConfig,
    Vp9Config,
    parse_audio_specific_config,
    parse_avcc,
    parse_keyframe_header,
)
from ingest.hub import StreamHub
from ingest.media import MILLISECONDS, MediaKind, MediaUnit

log = logging.getLogger(__name__)

_RATE_WINDOW = 5.0  # seconds of arrivals behind the bitrate and fps figures
_RATE_SLOT = 0.25  # the window is kept in slots this long (it spans up to one slot more)
#: Admissions (key lookup + ``on_publish`` hook) in flight at once; more wait their turn, so a
#: connect storm does not become a storm of store queries and hook requests.
ADMISSIONS_IN_FLIGHT = 32

#: The input a stream's own key publishes to.
MAIN_INPUT = "main"
#: Joins a stream id and a named input in a publish target ("demo/closeup"); stream ids have none.
INPUT_SEPARATOR = "/"


def split_target(target: str) -> tuple[str, str]:
    """The stream id and input name of a publish target (``resolve`` gives one)."""
    stream_id, _, name = target.partition(INPUT_SEPARATOR)
    return stream_id, name or MAIN_INPUT


class RefusalReason(enum.Enum):
    """Why the registry refuses a publisher; each protocol maps it to its own status."""

    BAD_KEY = "bad_key"  # unknown or invalid stream key
    DUPLICATE = "duplicate"  # the stream is live and on_duplicate_publisher = "reject"
    HOOK_DENIED = "hook_denied"  # the on_publish admission hook said no
    FULL = "full"  # max_publishers are live or being admitted


class PublishRefused(Exception):
    """A publish attempt is refused for ``reason``; ``detail`` says why in words."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Publisher(Protocol):
    """The ingest connection behind a session, as the registry sees it."""

    protocol: str
    peer: str

    def kick(self, reason: str) -> None:
        """Tell the publisher why, then close its connection."""


@runtime_checkable
class KeyframeSource(Protocol):
    """A publisher that can be asked for a keyframe now (WHIP: an RTCP PLI)."""

    def request_keyframe(self, *, force: bool = False) -> None: ...


class _RateSlot:
    """The units that arrived within one slot of the rate window."""

    __slots__ = (
        "bytes",
        "first_arrival",
        "first_dts",
        "frames",
        "last_arrival",
        "last_dts",
        "units",
    )

    def __init__(self, arrival: float) -> None:
        self.first_arrival = self.last_arrival = arrival
        self.units = self.bytes = self.frames = 0
        self.first_dts = self.last_dts = 0  # video dts (ms) of the slot's first and last frame


@dataclass
class IngestStats:
    """Running figures of one publish session, for the status API and metrics."""

    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    video_frames: int = 0
    #: pts (ms) of the newest frame received: a tag without "at" is stamped on it.
    newest_pts_ms: int | None = None
    audio_frames: int = 0
    bytes_received: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The rate window in slots of _RATE_SLOT seconds of arrivals (oldest first).
    _slots: collections.deque[_RateSlot] = field(default_factory=collections.deque, repr=False)
    _last_key_ms: int | None = field(default=None, repr=False)
    #: Spacing (ms) of the latest video keyframes.
    _key_spacing: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4), repr=False
    )

    def add(self, unit: MediaUnit) -> None:
        if unit.is_config:
            if unit.kind is MediaKind.VIDEO:
                self.video_codec = unit.codec
                self._describe_video(unit)
            else:
                self.audio_codec = unit.codec
                self._describe_audio(unit)
            return
        size = len(unit.payload)
        self.bytes_received += size
        # RTMP units count milliseconds already: no Fraction arithmetic for them.
        in_ms = unit.timebase is MILLISECONDS
        if unit.kind is MediaKind.VIDEO:
            self.video_frames += 1
            self.video_codec = self.video_codec or unit.codec
            dts_ms = unit.dts if in_ms else unit.rescale(unit.dts, MILLISECONDS)
            pts_ms = unit.pts if in_ms else unit.rescale(unit.pts, MILLISECONDS)
            if self.newest_pts_ms is None or pts_ms > self.newest_pts_ms:
                self.newest_pts_ms = pts_ms
            if unit.keyframe and self.width is None and unit.codec == "vp9":
                self._vp9_size(unit.payload)
            if unit.keyframe:
                if self._last_key_ms is not None and pts_ms > self._last_key_ms:
                    self._key_spacing.append(pts_ms - self._last_key_ms)
                self._last_key_ms = pts_ms
        else:
            self.audio_frames += 1
            self.audio_codec = self.audio_codec or unit.codec
            dts_ms = -1
            if self.video_codec is None:  # audio-only: tags land on audio frames
                self.newest_pts_ms = unit.pts if in_ms else unit.rescale(unit.pts, MILLISECONDS)
        # Counted into the current slot: no per-unit record to allocate, keep and trim.
        arrival = unit.arrival
        slots = self._slots
        slot = slots[-1] if slots else None
        if slot is None or not slot.first_arrival <= arrival < slot.first_arrival + _RATE_SLOT:
            slot = _RateSlot(arrival)
            slots.append(slot)
            oldest = arrival - _RATE_WINDOW
            while slots[0].last_arrival < oldest:  # never empties: the new slot is not older
                slots.popleft()
        slot.last_arrival = arrival
        slot.units += 1
        slot.bytes += size
        if dts_ms >= 0:
            if not slot.frames:
                slot.first_dts = dts_ms
            slot.frames += 1
            slot.last_dts = dts_ms

    def _describe_video(self, unit: MediaUnit) -> None:
        if unit.codec == "hevc":
            try:
                hvcc = HevcConfig.parse(unit.payload)
            except BitstreamError as exc:
                log.warning("unreadable hvcC: %s", exc)
                return
            self.width, self.height = hvcc.sps_info.width, hvcc.sps_info.height
            return
        if unit.codec == "av1":
            try:
                av1c = Av1Config.parse(unit.payload)
            except BitstreamError as exc:
                log.warning("unreadable av1C: %s", exc)
                return
            self.width, self.height = av1c.sequence.width, av1c.sequence.height
            return
        if unit.codec == "vp9":
            try:
                Vp9Config.parse(unit.payload)
            except BitstreamError as exc:
                log.warning("unreadable vpcC: %s", exc)
            # vpcC has no frame size: the next keyframe's header gives it.
            self.width = self.height = None
            return
        if unit.codec != "h264":
            return
        try:
            avcc = parse_avcc(unit.payload)
        except BitstreamError as exc:
            log.warning("unreadable avcC: %s", exc)
            return
        if avcc.sps_info is not None:
            self.width = avcc.sps_info.width
            self.height = avcc.sps_info.height

    def _vp9_size(self, frame: bytes) -> None:
        try:
            header = parse_keyframe_header(frame)
        except BitstreamError as exc:
            log.warning("unreadable VP9 keyframe header: %s", exc)
            return
        self.width, self.height = header.width, header.height

    def _describe_audio(self, unit: MediaUnit) -> None:
        if unit.codec != "aac":
            return
        try:
            asc = parse_audio_specific_config(unit.payload)
        except BitstreamError as exc:
            log.warning("unreadable AudioSpecificConfig: %s", exc)
            return
        self.sample_rate = asc.sample_rate
        self.channels = asc.channels

    def set_metadata(self, values: dict[str, Any]) -> None:
        self.metadata = values
        if self.width is None and isinstance(values.get("width"), int | float):
            self.width = int(values["width"])
            self.height = int(values.get("height") or 0) or None

    @property
    def bitrate(self) -> int:
        """Ingest bits per second over the last few seconds of arrivals."""
        slots = self._slots
        if sum(slot.units for slot in slots) < 2:
            return 0
        span = slots[-1].last_arrival - slots[0].first_arrival
        return int(sum(slot.bytes for slot in slots) * 8 / span) if span > 0 else 0

    @property
    def gop(self) -> float | None:
        """Seconds between the latest video keyframes (the longest of the last few), once two
        spacings are known."""
        if len(self._key_spacing) < 2:
            return None
        return max(self._key_spacing) / 1000

    @property
    def fps(self) -> float | None:
        """Video frames per second from the stream's own timestamps (not arrival jitter)."""
        video = [slot for slot in self._slots if slot.frames]
        frames = sum(slot.frames for slot in video)
        if frames < 2 or video[-1].last_dts <= video[0].first_dts:
            return None
        return round((frames - 1) * 1000 / (video[-1].last_dts - video[0].first_dts), 2)


class PublishSession:
    """One publisher feeding one stream's hub, from publish to unpublish."""

    def __init__(
        self,
        stream_id: str,
        publisher: Publisher,
        hub_queue_size: int,
        input_name: str = MAIN_INPUT,
        on_reconfigured: Sequence[ReconfigListener] = (),
    ) -> None:
        self.stream_id = stream_id
        #: Told ``(session, what changed)`` when the video configuration changes mid-session.
        self.on_reconfigured = on_reconfigured
        self._video_config: tuple[str, bytes] | None = None
        #: Which of the stream's inputs this publisher feeds (its own hub, see ``LiveStreams``).
        self.input = input_name
        #: A backup input takes over by itself when the input on air stops.
        self.backup = False
        self.publisher = publisher
        self.hub = StreamHub(stream_id, hub_queue_size)
        self.stats = IngestStats()
        self.started_at = time.time()
        self.ended = False
        #: Whether the publisher ended on purpose (unpublish, DELETE, kick) rather than dropped.
        self.clean_end = False
        #: Wall clock of the newest media unit (``None`` before the first one).
        self.last_media: float | None = None

    def write(self, unit: MediaUnit) -> None:
        if not unit.is_config:  # nearly every unit: no configuration bookkeeping
            self.stats.add(unit)
            self.last_media = unit.arrival
            self.hub.publish(unit)
            return
        before = (self.stats.video_codec, self.stats.width, self.stats.height)
        self.stats.add(unit)
        self.hub.publish(unit)
        if unit.kind is MediaKind.VIDEO:
            config, self._video_config = self._video_config, (unit.codec, unit.payload)
            if config is not None and config != self._video_config:
                # Told after the hub has it: a reader attached now starts with the new one.
                after = (unit.codec, self.stats.width, self.stats.height)
                change = f"video {_format(*before)} → {_format(*after)}"
                for listener in self.on_reconfigured:
                    listener(self, change)


@dataclass
class StreamState:
    """Per-stream facts that outlive a session (for the status API)."""

    last_error: str | None = None
    last_session_end: float | None = None


SessionListener = Callable[[PublishSession], None]
ReconfigListener = Callable[[PublishSession, str], None]


def _format(codec: str | None, width: int | None, height: int | None) -> str:
    return f"{codec or '?'} {width or '?'}x{height or '?'}"


class LiveStreams:
    """Which streams are live; starts, takes over and ends publish sessions."""

    def __init__(
        self,
        authorize: Callable[[str], Awaitable[str | None]],
        *,
        on_duplicate: str = "takeover",
        hub_queue_size: int = 512,
        max_publishers: int = 0,
        admissions_in_flight: int = ADMISSIONS_IN_FLIGHT,
    ) -> None:
        self._authorize = authorize
        self.on_duplicate = on_duplicate
        self.hub_queue_size = hub_queue_size
        #: Live sessions plus admissions in progress beyond which publishers are refused (0: any).
        self.max_publishers = max_publishers
        self.admitting_now = 0
        self._admission_turns = asyncio.Semaphore(admissions_in_flight)
        #: The main input's session of each live stream.
        self.sessions: dict[str, PublishSession] = {}
        #: Sessions of named inputs: stream id → input name → session (each its own hub).
        self.inputs: dict[str, dict[str, PublishSession]] = {}
        self.states: collections.defaultdict[str, StreamState] = collections.defaultdict(
            StreamState
        )
        self.on_session_start: list[SessionListener] = []
        self.on_session_end: list[SessionListener] = []
        #: Told when a named input (not ``main``) starts and ends publishing.
        self.on_input_start: list[SessionListener] = []
        self.on_input_end: list[SessionListener] = []
        #: Told when a session's video configuration (codec, picture size) changes mid-session.
        self.on_reconfigured: list[ReconfigListener] = []
        #: (session, message name, AMF arguments, timestamp in ms) for publisher data messages
        self.on_data: list[Callable[[PublishSession, str, tuple[Any, ...], int], None]] = []
        #: Optional admission check before a publisher is accepted: returns a refusal or None.
        self.admission: Callable[[str, Publisher], Awaitable[str | None]] | None = None
        #: Optional cluster-wide check after admission (the stream's lease): a refusal means
        #: another node publishes the stream (``DUPLICATE``), or None.
        self.ownership: Callable[[str, Publisher], Awaitable[str | None]] | None = None

    async def resolve(self, stream_key: str) -> str:
        """The publish target of ``stream_key``: a stream id, or ``"<stream id>/<input>"`` for
        a named input's key (see :func:`split_target`); ``PublishRefused`` if the key is unknown
        (and whatever ``authorize`` raises when it cannot tell, e.g. its database is down)."""
        stream_id = await self._authorize(stream_key)
        if stream_id is None:
            raise PublishRefused(RefusalReason.BAD_KEY, "unknown or invalid stream key")
        return stream_id

    async def admit(self, target: str, publisher: Publisher) -> None:
        """Ask the optional admission hook (``on_publish``), then the optional ownership check
        (the cluster's lease); ``PublishRefused`` if either says no."""
        stream_id, _ = split_target(target)
        if self.admission is not None:
            refusal = await self.admission(stream_id, publisher)
            if refusal is not None:
                raise PublishRefused(RefusalReason.HOOK_DENIED, refusal)
        if self.ownership is not None:
            refusal = await self.ownership(stream_id, publisher)
            if refusal is not None:
                raise PublishRefused(RefusalReason.DUPLICATE, refusal)

    async def start(self, stream_key: str, publisher: Publisher) -> PublishSession:
        """Authorize ``stream_key`` and open a session (no admission hook)."""
        return self.open(await self.resolve(stream_key), publisher)

    @contextlib.asynccontextmanager
    async def admitting(self) -> AsyncIterator[None]:
        """Hold a publisher's place from its publish request to its open session.

        ``PublishRefused`` (``FULL``) at once when ``max_publishers`` are live or being
        admitted; otherwise the body runs once one of the admission turns is free.
        """
        if self.max_publishers and len(self.sessions) + self.admitting_now >= self.max_publishers:
            raise PublishRefused(
                RefusalReason.FULL, f"the server is full ({self.max_publishers} publishers)"
            )
        self.admitting_now += 1
        try:
            async with self._admission_turns:
                yield
        finally:
            self.admitting_now -= 1

    def open(self, target: str, publisher: Publisher) -> PublishSession:
        """Open a session for an authorized publisher; takes over or refuses a live one."""
        stream_id, input_name = split_target(target)
        if input_name != MAIN_INPUT:
            return self._open_input(stream_id, input_name, publisher)
        current = self.sessions.get(stream_id)
        if current is None and 0 < self.max_publishers <= len(self.sessions):
            # Protocols that admit without admitting() (WHIP, SRT) meet the same bound here.
            raise PublishRefused(
                RefusalReason.FULL, f"the server is full ({self.max_publishers} publishers)"
            )
        if current is not None:
            if self.on_duplicate == "reject":
                raise PublishRefused(
                    RefusalReason.DUPLICATE, f"stream {stream_id} is already being published"
                )
            log.info(
                "[%s] %s publisher %s takes over from %s",
                stream_id,
                publisher.protocol,
                publisher.peer,
                current.publisher.peer,
            )
            self.end(current, f"taken over by a new publisher from {publisher.peer}", clean=True)
            current.publisher.kick("stream taken over by another publisher")
        session = PublishSession(
            stream_id, publisher, self.hub_queue_size, on_reconfigured=self.on_reconfigured
        )
        self.sessions[stream_id] = session
        for listener in self.on_session_start:
            listener(session)
        return session

    def _open_input(self, stream_id: str, name: str, publisher: Publisher) -> PublishSession:
        """A named input's publisher: a newer one takes over (never refused: a camera that
        reconnects must get its input back)."""
        live = self.inputs.setdefault(stream_id, {})
        current = live.get(name)
        if current is not None:
            self.end(current, f"taken over by a new publisher from {publisher.peer}", clean=True)
            current.publisher.kick("input taken over by another publisher")
        session = PublishSession(
            stream_id, publisher, self.hub_queue_size, name, self.on_reconfigured
        )
        live[name] = session
        log.info("[%s] input %s: %s from %s", stream_id, name, publisher.protocol, publisher.peer)
        for listener in self.on_input_start:
            listener(session)
        return session

    def input_session(self, stream_id: str, name: str) -> PublishSession | None:
        """The live session of one of the stream's inputs (``main`` included), or None."""
        if name == MAIN_INPUT:
            return self.sessions.get(stream_id)
        return self.inputs.get(stream_id, {}).get(name)

    def end(
        self, session: PublishSession, error: str | None = None, *, clean: bool = False
    ) -> None:
        """Close ``session`` (idempotent); its hub readers drain and see end of stream.

        ``clean``: the publisher (or an operator) ended it on purpose; otherwise it dropped.
        """
        if session.ended:
            return
        session.ended = True
        session.clean_end = clean
        session.hub.end()
        if session.input != MAIN_INPUT:
            if error:
                self.states[session.stream_id].last_error = f"input {session.input}: {error}"
            live = self.inputs.get(session.stream_id, {})
            if live.get(session.input) is session:
                del live[session.input]
                if not live:
                    del self.inputs[session.stream_id]
            for listener in self.on_input_end:
                listener(session)
            return
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
        state = self.states[session.stream_id]
        state.last_session_end = time.time()
        if error:
            state.last_error = error
        for listener in self.on_session_end:
            listener(session)

    def kick(self, stream_id: str, reason: str) -> bool:
        """Disconnect the stream's publisher (and its named inputs'); False if its main input
        is not live."""
        for named in list(self.inputs.get(stream_id, {}).values()):
            self.end(named, reason, clean=True)
            named.publisher.kick(reason)
        session = self.sessions.get(stream_id)
        if session is None:
            return False
        self.end(session, reason, clean=True)
        session.publisher.kick(reason)
        return True
