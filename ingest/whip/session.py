"""One WHIP publisher: its aiortc peer connection, feeding its stream's hub.

Life cycle: ``negotiate(offer)`` → answer; ``attach(live)`` once the registry opened the publish
session; frames flow from aiortc's receiver threads (as :class:`EncodedFrame`, see
:mod:`ingest.whip.codecs`) to :meth:`_on_frame` on the loop, which writes media units; ``close()``
(DELETE, ICE failure, the publisher's BYE, takeover, shutdown) ends the publish session, closes
the peer connection (its receiver threads are joined there) and cancels our tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import candidate_from_sdp

from ingest.media import MediaKind, MediaUnit
from ingest.sessions import PublishSession
from ingest.whip.codecs import (
    AUDIO_CLOCK,
    SUPPORTED_AUDIO,
    SUPPORTED_VIDEO,
    VIDEO_CLOCK,
    EncodedFrame,
    use_encoded_frames,
)
from ingest.whip.ice import CandidatePolicy

log = logging.getLogger(__name__)

#: How long after its release by aiortc's jitter buffer a frame was received, per kind: the
#: audio buffer holds 4 packets (20 ms each) before releasing one, the video buffer one frame
#: (~1/30 s). Both tracks are put on the wall clock from their first frame's arrival minus this.
_JITTER_DELAY = {MediaKind.VIDEO: 1 / 30, MediaKind.AUDIO: 4 * 0.020}
#: Keyframe requests (RTCP PLI) while no keyframe arrived yet, and the minimum spacing of any.
_PLI_RETRY = 0.5
_TICK = 0.25
#: Codecs whose WebRTC payload format carries no configuration record.
_NO_RECORD = frozenset({"vp8", "opus"})


@dataclass(frozen=True)
class WhipSettings:
    """The ``[whip]`` section as the ingest sees it."""

    ice_servers: tuple[str, ...] = ()
    ice_username: str = ""
    ice_credential: str = ""
    candidates: CandidatePolicy = field(default_factory=CandidatePolicy)
    max_sessions: int = 16
    #: POST/PATCH/DELETE requests per second per client address, and the burst allowed.
    rate_limit: float = 5.0
    rate_burst: int = 20
    #: A keyframe is requested when the publisher sent none for this long (the passthrough
    #: rung needs keyframes at most one segment apart; browsers send one only when asked).
    keyframe_interval: float = 1.0
    #: A session whose ICE/DTLS did not connect within this many seconds is closed.
    connect_timeout: float = 15.0

    @classmethod
    def from_section(cls, section: Any) -> WhipSettings:
        """From shopcast's ``[whip]`` config section (same field names)."""
        return cls(
            ice_servers=section.ice_servers,
            ice_username=section.ice_username,
            ice_credential=section.ice_credential,
            candidates=CandidatePolicy(
                section.host_addresses, section.udp_port_min, section.udp_port_max
            ),
            max_sessions=section.max_sessions,
            rate_limit=section.rate_limit,
            rate_burst=section.rate_burst,
            keyframe_interval=section.keyframe_interval,
            connect_timeout=section.connect_timeout,
        )

    def rtc_configuration(self) -> RTCConfiguration:
        """No ICE servers unless configured (aiortc's default would ask a public STUN server)."""
        servers = []
        for url in self.ice_servers:
            if url.startswith(("turn:", "turns:")):
                servers.append(
                    RTCIceServer(url, username=self.ice_username, credential=self.ice_credential)
                )
            else:
                servers.append(RTCIceServer(url))
        return RTCConfiguration(iceServers=servers)


#: Creates a product tag on a stream from a JSON body (the control API's tag request) and
#: returns the created tag as JSON; raises with ``code`` (and ``status``) when refused.
TagSink = Callable[[str, Any], Awaitable[dict[str, Any]]]
#: Largest data channel message taken as a tag request.
MAX_TAG_MESSAGE = 16 * 1024


class OfferError(Exception):
    """The offer cannot be answered; ``status`` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _TrackClock:
    """A track's RTP time → integer PTS on the session's clock (shared by both tracks)."""

    def __init__(self, clock: int) -> None:
        self.clock = clock
        self.offset: int | None = None  # ticks added to the RTP time

    def pts(self, frame: EncodedFrame, origin: float) -> int:
        if self.offset is None:
            # Wall time of RTP time 0 = arrival - buffering delay - RTP time of that frame.
            wall0 = frame.arrival - _JITTER_DELAY[frame.kind] - frame.timestamp / self.clock
            self.offset = round((wall0 - origin) * self.clock)
        return frame.timestamp + self.offset


class WhipSession:
    """A WHIP session resource and the :class:`ingest.sessions.Publisher` of its stream."""

    protocol = "whip"

    def __init__(
        self,
        stream_id: str,
        peer: str,
        settings: WhipSettings,
        on_closed: Callable[[WhipSession, str | None], None],
        on_tag: TagSink | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.peer = peer
        self.settings = settings
        self.id = secrets.token_urlsafe(24)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.live: PublishSession | None = None
        self.pc: RTCPeerConnection | None = None
        self.remote_ufrag: str | None = None
        self.created = time.monotonic()
        self.closed = False
        self.video_frames = 0
        self.audio_frames = 0
        self.keyframes = 0
        self.plis_sent = 0
        self._on_closed = on_closed
        self._on_tag = on_tag
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._tag_reply: asyncio.Future[None] | None = None  # the newest data channel reply
        self._origin: float | None = None  # wall time of PTS 0
        self._clocks = {
            MediaKind.VIDEO: _TrackClock(VIDEO_CLOCK),
            MediaKind.AUDIO: _TrackClock(AUDIO_CLOCK),
        }
        #: newest codec configuration per track (codec, record) and the one last written
        self._configs: dict[MediaKind, tuple[str, bytes]] = {}
        self._written: dict[MediaKind, tuple[str, bytes]] = {}
        self._video_started = False
        self._has_video = False
        self._last_keyframe: float | None = None
        self._last_pli = 0.0

    @property
    def path(self) -> str:
        return f"/whip/{self.stream_id}/{self.id}"

    # --- offer / answer -------------------------------------------------------------------

    async def negotiate(self, offer: str, kinds: frozenset[str]) -> str:
        """Answer ``offer`` (recvonly, candidates gathered); ``OfferError`` when it cannot.

        ``kinds`` are the media kinds the offer sends: a transceiver of a kind the offer lacks
        would gather candidates of its own and keep the connection from ever being "connected".
        """
        pc = self.pc = RTCPeerConnection(self.settings.rtc_configuration())
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        pc.on("datachannel", self._on_channel)
        # Our own recvonly transceivers, so the answer offers only codecs we take, H.264 first.
        for kind, names in (("video", SUPPORTED_VIDEO), ("audio", SUPPORTED_AUDIO)):
            if kind not in kinds:
                continue
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            caps = RTCRtpReceiver.getCapabilities(kind)
            assert caps is not None
            preferred: list[RTCRtpCodecCapability] = []
            for name in names:
                preferred += [c for c in caps.codecs if c.name.lower() == name]
            preferred += [c for c in caps.codecs if c.name.lower() == "rtx"]
            transceiver.setCodecPreferences(preferred)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        except ValueError as exc:
            raise OfferError(400, f"unusable offer: {exc}") from exc
        except Exception as exc:  # aiortc's OperationError: nothing in common
            raise OfferError(422, f"no supported codec in the offer: {exc}") from exc
        use_encoded_frames(pc)
        self.settings.candidates.apply(pc)
        answer = await pc.createAnswer()
        assert answer is not None
        await pc.setLocalDescription(answer)  # gathers every candidate (no server-side trickle)
        local = pc.localDescription
        self._has_video = any(t.kind == "video" and t.mid is not None for t in pc.getTransceivers())
        self._spawn(self._tick(), "tick")
        return local.sdp

    def attach(self, live: PublishSession) -> None:
        self.live = live
        log.info("[whip %s] %s publishing from %s", self.id[:8], self.stream_id, self.peer)

    async def add_candidates(self, fragment: str) -> None:
        """Trickled candidates (``application/trickle-ice-sdpfrag``, RFC 8840)."""
        assert self.pc is not None
        mid: str | None = None
        for transceiver in self.pc.getTransceivers():
            if transceiver.mid is not None:
                mid = transceiver.mid
                break
        for raw in fragment.splitlines():
            line = raw.strip()
            if line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:"):
                candidate = candidate_from_sdp(line[len("a=candidate:") :])
                candidate.sdpMid = mid
                await self.pc.addIceCandidate(candidate)
            elif line == "a=end-of-candidates":
                await self.pc.addIceCandidate(None)

    # --- media ----------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(self._consume(track), f"track-{track.kind}")

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, EncodedFrame):
                    self._on_frame(frame)
        except MediaStreamError:
            pass
        if not self.closed:
            self.schedule_close(f"publisher ended its {track.kind} track")

    def _on_frame(self, frame: EncodedFrame) -> None:
        live = self.live
        if live is None or live.ended:
            return
        kind = frame.kind
        if frame.config is not None:
            self._configs[kind] = (frame.codec, frame.config)
        elif frame.codec in _NO_RECORD and self._configs.get(kind, ("",))[0] != frame.codec:
            # VP8 and WebRTC Opus have no configuration record: the config unit names the codec.
            self._configs[kind] = (frame.codec, b"")
        if self._origin is None:
            self._origin = frame.arrival - _JITTER_DELAY[kind]
        pts = self._clocks[kind].pts(frame, self._origin)
        if pts < 0:
            return  # the other track started first: nothing may come before the first unit
        config = self._configs.get(kind)
        if config is None:
            if kind is MediaKind.VIDEO:
                self.request_keyframe()  # H.264 without SPS/PPS yet: nothing decodable
            return
        if config != self._written.get(kind):
            live.write(self._unit(frame, pts, config[1], config=True))
            self._written[kind] = config
            if kind is MediaKind.VIDEO:
                self._video_started = False  # a new configuration starts at a keyframe
        if kind is MediaKind.AUDIO:
            if frame.codec == "opus" and live.stats.sample_rate is None:
                # RFC 7587 §7: always "opus/48000/2"; the transcoder decodes it as stereo.
                live.stats.sample_rate, live.stats.channels = AUDIO_CLOCK, 2
            self.audio_frames += 1
            live.write(self._unit(frame, pts, frame.payload))
            return
        if frame.width and frame.height:
            live.stats.width, live.stats.height = frame.width, frame.height
        if not self._video_started:
            if not frame.keyframe:
                self.request_keyframe()
                return
            self._video_started = True
        self.video_frames += 1
        live.write(self._unit(frame, pts, frame.payload))
        if frame.keyframe:
            self.keyframes += 1
            self._last_keyframe = time.monotonic()
            if self.keyframes == 1 and frame.codec == "h264":
                # The passthrough rung holds H.264 until a second keyframe shows the GOP: ask
                # for it now instead of a keyframe_interval later (first part ~1 s sooner).
                self.request_keyframe(force=True)

    @staticmethod
    def _unit(frame: EncodedFrame, pts: int, payload: bytes, config: bool = False) -> MediaUnit:
        return MediaUnit(
            kind=frame.kind,
            codec=frame.codec,
            pts=pts,
            dts=pts,  # WebRTC encoders send no B-frames: decode order is presentation order
            timebase=Fraction(1, frame.clock),
            keyframe=frame.keyframe and not config,
            payload=payload,
            arrival=frame.arrival,
            is_config=config,
        )

    def request_keyframe(self, *, force: bool = False) -> None:
        """Ask the publisher for a keyframe (RTCP PLI, RFC 4585 §6.3.1).

        Also the hook for consumers that need one (``session.publisher.request_keyframe()``);
        at most one request per ``_PLI_RETRY`` unless ``force``.
        """
        now = time.monotonic()
        if self.pc is None or self.closed or (not force and now - self._last_pli < _PLI_RETRY):
            return
        self._last_pli = now
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind != "video":
                continue
            receiver = transceiver.receiver
            for source in receiver.getSynchronizationSources():
                self.plis_sent += 1
                self._spawn(receiver._send_rtcp_pli(source.source), "pli")

    async def _tick(self) -> None:
        timeout = self.settings.connect_timeout
        while not self.closed:
            await asyncio.sleep(_TICK)
            assert self.pc is not None
            now = time.monotonic()
            if self.pc.connectionState != "connected":
                if now - self.created > timeout:
                    self.schedule_close(f"not connected within {timeout:g} s", error=True)
                    return
                continue
            if not self._has_video or self.live is None:
                continue
            last = self._last_keyframe
            if last is None or now - last >= self.settings.keyframe_interval:
                self.request_keyframe()

    def _on_state(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        log.debug("[whip %s] connection %s", self.id[:8], state)
        if state == "failed" and not self.closed:
            self.schedule_close("ICE/DTLS connection failed", error=True)

    # --- product tags over a data channel -------------------------------------------------

    def _on_channel(self, channel: RTCDataChannel) -> None:
        """Each text message is a tag request (``{"kind": "product", "product_id": …}``).

        It is stamped like an API tag without ``at``: on the newest frame ingested when the
        message arrives, which, riding the same transport as the media, is the frame being
        sent give or take network jitter. The reply on the channel is the tag or the refusal.
        """

        def on_message(message: str | bytes) -> None:
            previous = self._tag_reply

            async def reply() -> None:
                if previous is not None:  # replies go out in the order the requests came
                    await asyncio.wait([previous])
                result = await self._tag(message)
                if channel.readyState == "open":
                    channel.send(json.dumps(result))

            self._tag_reply = asyncio.ensure_future(reply())

        channel.on("message", on_message)

    async def _tag(self, message: str | bytes) -> dict[str, Any]:
        if self._on_tag is None or self.live is None:
            return {"error": {"code": "unavailable", "message": "tags are not taken now"}}
        if len(message) > MAX_TAG_MESSAGE:
            return {"error": {"code": "too_large", "message": "tag message too large"}}
        try:
            body = json.loads(message)
        except ValueError as exc:
            return {"error": {"code": "invalid", "message": f"not JSON: {exc}"}}
        try:
            return await self._on_tag(self.stream_id, body)
        except Exception as exc:  # the tag service's refusal (TagError) carries a code
            code = getattr(exc, "code", None)
            if code is None:
                log.exception("[whip %s] tag failed", self.id[:8])
                code = "internal_error"
            return {"error": {"code": code, "message": str(exc)}}

    # --- closing --------------------------------------------------------------------------

    def kick(self, reason: str) -> None:
        """The registry ended the publish session (takeover, API kick): close the connection."""
        self.live = None  # already ended by the registry
        self.schedule_close(reason)

    def schedule_close(self, reason: str, *, error: bool = False) -> asyncio.Task[None]:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close(reason, error=error))
        return self._closing

    async def close(self, reason: str | None = None, *, error: bool = False) -> None:
        """End the publish session, close the peer connection, stop every task; idempotent."""
        if self.closed:
            if self._closing is not None and asyncio.current_task() is not self._closing:
                await asyncio.shield(self._closing)
            return
        self.closed = True
        log.info("[whip %s] %s closed: %s", self.id[:8], self.stream_id, reason or "done")
        self._on_closed(self, reason if error else None)
        self.live = None
        if self.pc is not None:
            await self.pc.close()  # stops the receivers (joins their worker threads), sockets
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and t is not self._closing]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"whip-{self.id[:8]}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
