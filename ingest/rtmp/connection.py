"""RTMP connection cores, sans-I/O (h11 style): bytes in, events and bytes out; the server role
(:class:`RTMPServerConnection`) and the publishing client role (:class:`RTMPClientConnection`).

Every state transition lives in this module (see :class:`State`). The asyncio server calls
``receive_data()`` with what it read (``b""`` at EOF), then ``next_event()`` until ``NEED_DATA``,
answering decision events (``ConnectRequested``, ``PublishRequested``) with ``accept_*`` or
``reject_*``, and writes ``data_to_send()`` to the socket. While a decision is outstanding the
core stops parsing (``next_event()`` returns ``NEED_DATA``, or ``ConnectionClosed`` after EOF).

Time: the constructor takes ``clock`` (e.g. ``time.time``); it is called once per
``receive_data()`` call and stamps the ``arrival`` of the media units parsed from those bytes.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.media import MediaUnit
from ingest.rtmp import amf0, flv, tags
from ingest.rtmp.chunk import ChunkMessage, ChunkStreamReader, ChunkWriter
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.events import (
    NEED_DATA,
    ClientEvent,
    CommandResult,
    ConnectionClosed,
    ConnectRequested,
    DataMessage,
    Event,
    HandshakeComplete,
    MetaData,
    PublishEnded,
    PublishRequested,
    StatusReceived,
    _Sentinel,
)
from ingest.rtmp.handshake import ClientHandshake, ServerHandshake
from ingest.rtmp.limits import (
    MAX_AMF_DEPTH,
    MAX_AMF_ITEMS,
    MAX_AMF_STRING,
    MAX_AMF_VALUES,
    MAX_APP_NAME,
    MAX_BUFFERED,
    MAX_CHUNK_SIZE,
    MAX_CHUNK_STREAMS,
    MAX_MESSAGE_SIZE,
)
from ingest.shown import cut, shown

# §5.4 protocol control and §7.1 message types
MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
MSG_ACK = 3
MSG_USER_CONTROL = 4
MSG_WINDOW_ACK_SIZE = 5
MSG_SET_PEER_BANDWIDTH = 6
MSG_AUDIO = 8
MSG_VIDEO = 9
MSG_DATA_AMF3 = 15
MSG_SHARED_OBJECT_AMF3 = 16
MSG_COMMAND_AMF3 = 17
MSG_DATA_AMF0 = 18
MSG_SHARED_OBJECT_AMF0 = 19
MSG_COMMAND_AMF0 = 20
MSG_AGGREGATE = 22
# §7.1.7 User Control event types
UC_STREAM_BEGIN = 0
UC_SET_BUFFER_LENGTH = 3
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

WINDOW_ACK_SIZE = 2_500_000  # what we announce; we acknowledge every this many bytes (§5.4.3)
PEER_BANDWIDTH = 2_500_000
OUT_CHUNK_SIZE = 4096
_CSID_CONTROL = 2  # §5.4: protocol control messages use chunk stream 2, message stream 0
_CSID_COMMAND = 3
_CSID_STATUS = 5
_SERVER_INFO = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}


class State(enum.Enum):
    """Connection states, in the order a publisher walks through them."""

    HANDSHAKE = "handshake"  # waiting for C0/C1/C2
    CONNECT = "connect"  # waiting for the connect command
    CONNECT_PENDING = "connect pending"  # ConnectRequested emitted; accept_connect/reject_connect
    CONNECTED = "connected"  # releaseStream/FCPublish/createStream/publish
    PUBLISH_PENDING = "publish pending"  # PublishRequested emitted; accept_publish/reject_publish
    PUBLISHING = "publishing"  # media and data flow
    CLOSED = "closed"  # EOF, a protocol error, a rejection or end_publish()


@dataclass(frozen=True, slots=True)
class RTMPLimits:
    """Bounds on what one peer can make the core hold or do."""

    max_chunk_size: int = MAX_CHUNK_SIZE  # largest Set Chunk Size accepted
    max_message_size: int = MAX_MESSAGE_SIZE
    max_buffered: int = MAX_BUFFERED
    max_chunk_streams: int = MAX_CHUNK_STREAMS
    max_amf_depth: int = MAX_AMF_DEPTH
    max_amf_string: int = MAX_AMF_STRING
    max_amf_items: int = MAX_AMF_ITEMS
    max_amf_values: int = MAX_AMF_VALUES
    max_stream_name: int = 256
    max_app_name: int = MAX_APP_NAME
    max_message_streams: int = 8  # createStream calls per connection
    max_output: int = 1 << 20  # reply bytes not yet taken by data_to_send()


class RTMPServerConnection:
    """One publisher's RTMP connection, server side, without I/O."""

    def __init__(
        self,
        limits: RTMPLimits | None = None,
        *,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.limits = limits = limits or RTMPLimits()
        self.state = State.HANDSHAKE
        self.bytes_received = 0
        self.app = ""
        self.publishing: PublishRequested | None = None
        self.peer_window_ack_size = 0  # from the client's Window Acknowledgement Size
        self.peer_acknowledged = 0  # sequence number of the client's last Acknowledgement
        self._clock = clock
        self._arrival = 0.0
        self._amf_limits = amf0.AMF0Limits(
            limits.max_amf_depth, limits.max_amf_string, limits.max_amf_items, limits.max_amf_values
        )
        self._handshake = ServerHandshake(random_bytes)
        self._reader = ChunkStreamReader(
            max_chunk_size=limits.max_chunk_size,
            max_message_size=limits.max_message_size,
            max_buffered=limits.max_buffered,
            max_chunk_streams=limits.max_chunk_streams,
        )
        self._writer = ChunkWriter()
        self._inbox = bytearray()
        self._reader_drained = False  # the reader's last next_message() returned None
        self._events: deque[Event | MediaUnit] = deque()
        self._out = bytearray()
        self._eof = False
        self._error: RTMPProtocolError | None = None
        # An error met after units were read in the same step: raised once they are taken.
        self._late_error: RTMPProtocolError | None = None
        self._pending: ConnectRequested | PublishRequested | None = None
        self._streams: set[int] = set()
        self._next_stream_id = 1
        self._streams_created = 0
        self._ack_window = 0  # 0 until we announced a window in accept_connect()
        self._acked_at = 0
        self._timestamps = tags.TimestampUnwrapper()

    # -- input ---------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes the core holds: unfed input, handshake bytes and the chunk reader's buffers."""
        return len(self._inbox) + self._handshake.buffered + self._reader.buffered

    def receive_data(self, data: bytes) -> None:
        """Hand over bytes read from the socket; ``b""`` means the peer closed its side."""
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        if not data:
            self._eof = True
            return
        self.bytes_received += len(data)
        self._arrival = self._clock()
        if self.state is State.CLOSED or self._error is not None:
            return
        if self.state is State.PUBLISHING and self._reader_drained and not self._inbox:
            # The common read: straight to the chunk reader (which keeps a bytes object as it
            # is), not copied into the inbox and out again. Its own bound applies.
            try:
                self._reader.feed(data)
            except RTMPProtocolError as exc:
                self._error = exc
                return
            self._reader_drained = False
        elif len(self._inbox) + len(data) > self.limits.max_buffered:
            self._error = RTMPProtocolError(
                f"more than {self.limits.max_buffered} received bytes wait unparsed"
            )
            return
        else:
            self._inbox += data
        # §5.4.3: acknowledge once the peer has sent a window's worth since our last ack
        if self._ack_window and self.bytes_received - self._acked_at >= self._ack_window:
            self._acked_at = self.bytes_received
            self._control(MSG_ACK, (self.bytes_received & 0xFFFFFFFF).to_bytes(4, "big"))

    def next_event(self) -> Event | MediaUnit | _Sentinel:
        """Return the next event or media unit, or ``NEED_DATA``; raises :class:`RTMPProtocolError`.

        After an error, reply bytes queued before it (e.g. an onStatus refusal) are still in
        ``data_to_send()``; send them, then close.
        """
        if self._late_error is not None:
            if self._events:
                return self._events.popleft()
            self._error, self._late_error = self._late_error, None
        if self._error is not None:
            self.state = State.CLOSED
            raise self._error
        while True:
            if self._events:
                return self._events.popleft()
            if self.state is State.CLOSED or self._pending is not None:
                return self._at_rest()
            if self._reader_drained and not self._inbox:
                return self._at_rest()  # nothing to parse: the end of every read
            try:
                progressed = self._step()
            except RTMPProtocolError as exc:
                self.state = State.CLOSED
                if self._events:
                    # Units read before the error in the same step go out first, as they did
                    # when each step read one message.
                    self._late_error = exc
                    return self._events.popleft()
                self._error = exc
                raise
            if not progressed:
                return self._at_rest()

    def _at_rest(self) -> ConnectionClosed | _Sentinel:
        if self._eof:
            self.state = State.CLOSED
            return ConnectionClosed()
        return NEED_DATA

    def _step(self) -> bool:
        """Parse what the buffered bytes allow; return whether anything was consumed."""
        if self.state is State.HANDSHAKE:
            if not self._inbox:
                return False
            data = bytes(self._inbox)
            self._inbox.clear()
            self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.complete:
                return False
            self._inbox += self._handshake.leftover
            self.state = State.CONNECT
            self._events.append(
                HandshakeComplete(self._handshake.client_version, self._handshake.digest)
            )
            return True
        publishing = self.publishing
        if self.state is State.PUBLISHING and publishing is not None:
            return self._step_publishing(publishing)
        # Once the reader said it needs bytes, asking it again before feeding is wasted.
        msg = None if self._reader_drained else self._reader.next_message()
        if msg is None:
            if not self._inbox:
                self._reader_drained = True
                return False
            self._reader.feed(bytes(self._inbox))
            self._inbox.clear()
            msg = self._reader.next_message()
            if msg is None:
                self._reader_drained = True
                return False
        self._reader_drained = False
        self._dispatch(msg)
        if len(self._out) > self.limits.max_output:
            raise RTMPProtocolError(
                f"more than {self.limits.max_output} reply bytes pending; the peer floods requests"
            )
        return True

    def _step_publishing(self, publishing: PublishRequested) -> bool:
        """While publishing: every media message the buffered bytes complete becomes a unit in
        one reader call (the compiled reader parses chunks and FLV tags and builds units in C);
        the first other message goes through :meth:`_dispatch`."""
        queued = len(self._events)
        stream_id = publishing.message_stream_id
        reader = self._reader
        msg = None
        try:
            if not self._reader_drained:
                msg = reader.read_media(
                    stream_id, self._events.append, self._timestamps.unwrap,
                    tags.parse_video, tags.parse_audio, self._arrival,
                )  # fmt: skip
            if msg is None and self._inbox:
                reader.feed(bytes(self._inbox))
                self._inbox.clear()
                msg = reader.read_media(
                    stream_id, self._events.append, self._timestamps.unwrap,
                    tags.parse_video, tags.parse_audio, self._arrival,
                )  # fmt: skip
        except flv.UnsupportedMediaError as exc:
            self._status(stream_id, "error", "NetStream.Publish.Rejected", str(exc))
            raise
        if msg is None:
            self._reader_drained = True
            return len(self._events) > queued
        self._reader_drained = False
        mark = len(self._events)
        try:
            self._dispatch(msg)
        except RTMPProtocolError:
            # What the failing message itself yielded (an aggregate's first sub-messages) goes
            # with it, as when each step read one message; the units before it still go out.
            while len(self._events) > mark:
                self._events.pop()
            raise
        if len(self._out) > self.limits.max_output:
            raise RTMPProtocolError(
                f"more than {self.limits.max_output} reply bytes pending; the peer floods requests"
            )
        return True

    # -- messages ------------------------------------------------------------------------------

    def _dispatch(self, msg: ChunkMessage) -> None:
        t = msg.type_id
        if t in (MSG_VIDEO, MSG_AUDIO):  # nearly every message: tested first
            self._media(t, msg.stream_id, msg.timestamp, msg.payload)
            return
        if t in (MSG_SET_CHUNK_SIZE, MSG_ABORT):
            return  # applied by the chunk reader (§5.4.1, §5.4.2)
        if t == MSG_ACK:
            self.peer_acknowledged = _u32(msg.payload, "Acknowledgement")
        elif t == MSG_WINDOW_ACK_SIZE:
            self.peer_window_ack_size = _u32(msg.payload, "Window Acknowledgement Size")
        elif t == MSG_SET_PEER_BANDWIDTH:
            pass  # §5.4.5: limits what we send; we send almost nothing
        elif t == MSG_USER_CONTROL:
            self._user_control(msg.payload)
        elif t in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            self._command(
                msg, _strip_amf3_prefix(msg.payload) if t == MSG_COMMAND_AMF3 else msg.payload
            )
        elif t in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            payload = _strip_amf3_prefix(msg.payload) if t == MSG_DATA_AMF3 else msg.payload
            self._data(msg.stream_id, msg.timestamp, payload)
        elif t == MSG_AGGREGATE:
            self._aggregate(msg)
        elif t in (MSG_SHARED_OBJECT_AMF0, MSG_SHARED_OBJECT_AMF3):
            pass  # shared objects are a Flash player feature; ignore
        else:
            raise RTMPProtocolError(f"unknown RTMP message type {t}")

    def _user_control(self, payload: bytes) -> None:
        # §7.1.7: event type (2 bytes) + event data
        if len(payload) < 2:
            raise RTMPProtocolError("User Control message shorter than 2 bytes")
        event = int.from_bytes(payload[:2], "big")
        if event == UC_PING_REQUEST:
            if len(payload) != 6:
                raise RTMPProtocolError("PingRequest is not 6 bytes")
            self._control(MSG_USER_CONTROL, UC_PING_RESPONSE.to_bytes(2, "big") + payload[2:6])
        # SetBufferLength, PingResponse and stream events from a client carry nothing for us.

    def _require_publishing(self, stream_id: int, what: str) -> None:
        if self.state is not State.PUBLISHING or self.publishing is None:
            raise RTMPProtocolError(
                f"{what} before publish was accepted (state {self.state.value})"
            )
        if stream_id != self.publishing.message_stream_id:
            raise RTMPProtocolError(
                f"{what} on message stream {stream_id}, publishing on"
                f" {self.publishing.message_stream_id}"
            )

    def _media(self, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        publishing = self.publishing
        if (
            self.state is not State.PUBLISHING
            or publishing is None
            or stream_id != publishing.message_stream_id
        ):
            what = "audio message" if type_id == MSG_AUDIO else "video message"
            self._require_publishing(stream_id, what)
        dts = self._timestamps.unwrap(timestamp)
        try:
            if type_id == MSG_VIDEO:
                unit = tags.parse_video(payload, dts, self._arrival)
            else:
                unit = tags.parse_audio(payload, dts, self._arrival)
        except flv.UnsupportedMediaError as exc:
            self._status(stream_id, "error", "NetStream.Publish.Rejected", str(exc))
            raise
        if unit is not None:
            self._events.append(unit)

    def _data(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        self._require_publishing(stream_id, "data message")
        values = amf0.decode_all(payload, self._amf_limits)
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if not values or not isinstance(values[0], str):
            raise RTMPProtocolError("data message without a handler name")
        name, args = values[0], values[1:]
        if name == "onMetaData":
            props = args[0] if args and isinstance(args[0], dict) else {}
            self._events.append(MetaData(dict(props)))
        else:
            self._events.append(DataMessage(name, tuple(args), self._timestamps.unwrap(timestamp)))

    def _aggregate(self, msg: ChunkMessage) -> None:
        # §7.1.6: FLV-tag-like sub-messages; the first one's timestamp maps to the aggregate's
        self._require_publishing(msg.stream_id, "aggregate message")
        data, pos, offset = msg.payload, 0, None
        while pos < len(data):
            if pos + 11 > len(data):
                raise RTMPProtocolError("aggregate sub-message header truncated")
            sub_type = data[pos]
            size = int.from_bytes(data[pos + 1 : pos + 4], "big")
            ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
            body = data[pos + 11 : pos + 11 + size]
            pos += 11 + size + 4  # header, body, back pointer
            if len(body) != size or pos > len(data):
                raise RTMPProtocolError("aggregate sub-message truncated")
            if offset is None:
                offset = msg.timestamp - ts
            ts = (ts + offset) & 0xFFFFFFFF
            if sub_type in (MSG_AUDIO, MSG_VIDEO):
                self._media(sub_type, msg.stream_id, ts, body)
            elif sub_type == MSG_DATA_AMF0:
                self._data(msg.stream_id, ts, body)
            else:
                raise RTMPProtocolError(f"aggregate carries message type {sub_type}")

    # -- commands (§7.2) -----------------------------------------------------------------------

    def _command(self, msg: ChunkMessage, payload: bytes) -> None:
        values = amf0.decode_all(payload, self._amf_limits)
        if len(values) < 2 or not isinstance(values[0], str) or not isinstance(values[1], float):
            raise RTMPProtocolError("command message without a name and transaction id")
        name, tid = values[0], values[1]
        obj = values[2] if len(values) > 2 else None
        args = values[3:]
        if self.state is State.CONNECT:
            if name != "connect":
                raise RTMPProtocolError(f"command {shown(name)} before connect")
            self._on_connect(tid, obj)
        elif name == "connect":
            raise RTMPProtocolError(f"second connect (state {self.state.value})")
        elif name == "createStream":
            if self._streams_created >= self.limits.max_message_streams:
                raise RTMPProtocolError(f"more than {self.limits.max_message_streams} createStream")
            self._streams_created += 1
            stream_id = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(stream_id)
            self._command_reply("_result", tid, None, float(stream_id))
        elif name == "releaseStream":
            self._command_reply("_result", tid, None, amf0.UNDEFINED)
        elif name == "FCPublish":
            # nginx-rtmp answers FCPublish with an onFCPublish notification
            self._send_command(
                0, "onFCPublish", 0.0, None,
                _info("status", "NetStream.Publish.Start", cut(_str(args))),
            )  # fmt: skip
        elif name == "publish":
            self._on_publish(msg.stream_id, tid, args)
        elif name in ("FCUnpublish", "closeStream", "deleteStream"):
            self._on_unpublish(name, msg.stream_id, tid, args)
        elif name in ("play", "play2"):
            self._status(
                msg.stream_id,
                "error",
                "NetStream.Play.Failed",
                "this server accepts publishing only",
            )
        elif name in ("_result", "_error", "onStatus"):
            pass  # answers to calls we never make
        elif tid != 0:  # getStreamLength, _checkbw, …: refuse, keep the connection
            self._command_reply(
                "_error",
                tid,
                None,
                _info("error", "NetConnection.Call.Failed", f"{cut(name)} is not supported"),
            )

    def _on_connect(self, tid: float, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise RTMPProtocolError("connect without a command object")
        app = obj.get("app")
        app = app.strip("/") if isinstance(app, str) else ""
        if len(app) > self.limits.max_app_name:
            # Refused here, before it is an event: nothing downstream ever holds or echoes it.
            reason = f"application name longer than {self.limits.max_app_name} characters"
            info = _info("error", "NetConnection.Connect.Rejected", reason)
            self._command_reply("_error", tid, None, info)
            raise RTMPProtocolError(f"connect refused: {reason}")
        ev = ConnectRequested(
            transaction_id=tid,
            app=app,
            tc_url=_as_str(obj.get("tcUrl")),
            flash_ver=_as_str(obj.get("flashVer")),
            properties=dict(obj),
        )
        self.app = app
        self._pending = ev
        self.state = State.CONNECT_PENDING
        self._events.append(ev)

    def _on_publish(self, stream_id: int, tid: float, args: list[Any]) -> None:
        if self.state is State.PUBLISHING:
            raise RTMPProtocolError("publish while already publishing")
        if stream_id not in self._streams:
            raise RTMPProtocolError(f"publish on message stream {stream_id} that was not created")
        raw = args[0] if args else None
        try:
            name, query = split_stream_name(raw, self.limits.max_stream_name)
        except ValueError as exc:
            self._status(stream_id, "error", "NetStream.Publish.BadName", str(exc))
            raise RTMPProtocolError(f"publish refused: {exc}") from None
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        ev = PublishRequested(tid, stream_id, self.app, name, query, publish_type)
        self._pending = ev
        self.state = State.PUBLISH_PENDING
        self._events.append(ev)

    def _on_unpublish(self, name: str, stream_id: int, tid: float, args: list[Any]) -> None:
        if name == "FCUnpublish":
            self._send_command(
                0, "onFCUnpublish", 0.0, None,
                _info("status", "NetStream.Unpublish.Success", cut(_str(args))),
            )  # fmt: skip
        elif name == "deleteStream":
            stream_id = _stream_id(args[0]) if args else -1
            self._streams.discard(stream_id)
        pub = self.publishing
        if self.state is State.PUBLISHING and pub is not None:
            if name != "FCUnpublish" and stream_id != pub.message_stream_id:
                return
            self._status(
                pub.message_stream_id, "status", "NetStream.Unpublish.Success",
                f"{pub.stream_name} is now unpublished.",
            )  # fmt: skip
            self.publishing = None
            self.state = State.CONNECTED
            self._events.append(PublishEnded(pub.message_stream_id))

    # -- decisions -----------------------------------------------------------------------------

    def _decide(self, ev: ConnectRequested | PublishRequested, state: State) -> None:
        if self.state is not state or self._pending is not ev:
            raise RuntimeError(f"no such pending request in state {self.state.value}: {ev!r}")
        self._pending = None

    def accept_connect(self, ev: ConnectRequested) -> None:
        """Queue Window Ack Size, Set Peer Bandwidth, Set Chunk Size and ``_result`` (§7.2.1.1)."""
        self._decide(ev, State.CONNECT_PENDING)
        self._control(MSG_WINDOW_ACK_SIZE, WINDOW_ACK_SIZE.to_bytes(4, "big"))
        self._control(
            MSG_SET_PEER_BANDWIDTH, PEER_BANDWIDTH.to_bytes(4, "big") + b"\x02"
        )  # dynamic
        self._control(MSG_SET_CHUNK_SIZE, OUT_CHUNK_SIZE.to_bytes(4, "big"))
        self._writer.chunk_size = OUT_CHUNK_SIZE
        self._ack_window = WINDOW_ACK_SIZE
        self._acked_at = self.bytes_received
        info = _info("status", "NetConnection.Connect.Success", "Connection succeeded.")
        info["objectEncoding"] = 0.0
        requested = ev.properties.get("fourCcList")
        if isinstance(requested, list):
            # enhanced-rtmp: answer with the FourCCs we accept from those the client offered
            ours = [fourcc.decode() for fourcc in flv.VIDEO_FOURCC]
            info["fourCcList"] = [f for f in ours if f in requested or "*" in requested]
        self._command_reply("_result", ev.transaction_id, dict(_SERVER_INFO), info)
        self.state = State.CONNECTED

    def reject_connect(self, ev: ConnectRequested, description: str) -> None:
        """Queue ``_error`` ``NetConnection.Connect.Rejected``; then close the connection."""
        self._decide(ev, State.CONNECT_PENDING)
        info = _info("error", "NetConnection.Connect.Rejected", description)
        self._command_reply("_error", ev.transaction_id, None, info)
        self.state = State.CLOSED

    def accept_publish(self, ev: PublishRequested) -> None:
        """Queue User Control Stream Begin and onStatus ``NetStream.Publish.Start``."""
        self._decide(ev, State.PUBLISH_PENDING)
        msid = ev.message_stream_id
        self._control(
            MSG_USER_CONTROL, UC_STREAM_BEGIN.to_bytes(2, "big") + msid.to_bytes(4, "big")
        )
        description = f"{ev.stream_name} is now published."
        self._status(msid, "status", "NetStream.Publish.Start", description, details=ev.stream_name)
        self.publishing = ev
        self.state = State.PUBLISHING

    def reject_publish(
        self,
        ev: PublishRequested,
        code: str = "NetStream.Publish.BadName",
        description: str = "publishing refused",
    ) -> None:
        """Queue an error onStatus with ``code``; the client may try another name or close."""
        self._decide(ev, State.PUBLISH_PENDING)
        self._status(ev.message_stream_id, "error", code, description)
        self.state = State.CONNECTED

    def end_publish(self, description: str, code: str = "NetStream.Publish.BadConnection") -> None:
        """Server-side end (kick, takeover): queue an error onStatus, then close.

        An error-level onStatus makes ffmpeg stop with "Server error: <description>"; OBS and
        librtmp log it.
        """
        msid = self.publishing.message_stream_id if self.publishing is not None else 0
        self._status(msid, "error", code, description)
        self.publishing = None
        self._pending = None
        self.state = State.CLOSED

    # -- output --------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the peer."""
        if not self._out:  # asked after every read; mostly there is nothing
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _control(self, type_id: int, payload: bytes) -> None:
        self._out += self._writer.write(_CSID_CONTROL, type_id, 0, 0, payload)

    def _send_command(self, stream_id: int, *values: Any) -> None:
        csid = _CSID_STATUS if values[0] == "onStatus" else _CSID_COMMAND
        self._out += self._writer.write(csid, MSG_COMMAND_AMF0, stream_id, 0, amf0.encode(*values))

    def _command_reply(self, name: str, tid: float, obj: Any, info: Any) -> None:
        self._send_command(0, name, tid, obj, info)

    def _status(
        self, stream_id: int, level: str, code: str, description: str, details: str | None = None
    ) -> None:
        info = _info(level, code, description)
        if details is not None:
            info["details"] = details
        self._send_command(stream_id, "onStatus", 0.0, None, info)


def split_stream_name(raw: Any, max_length: int) -> tuple[str, str]:
    """Validate a publish name and split off its ``?query``; ``ValueError`` says what is wrong."""
    if not isinstance(raw, str):
        raise ValueError("publish name is missing")
    name, _, query = raw.partition("?")
    if not name:
        raise ValueError("publish name is empty")
    if len(name) > max_length:
        raise ValueError(f"publish name longer than {max_length} characters")
    if "/" in name or "\\" in name:
        raise ValueError("publish name contains a slash")
    if ".." in name:
        raise ValueError("publish name contains '..'")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in raw):
        raise ValueError("publish name contains control characters")
    return name, query


def _info(level: str, code: str, description: str) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description}


def _u32(payload: bytes, what: str) -> int:
    if len(payload) != 4:
        raise RTMPProtocolError(f"{what} payload is not 4 bytes")
    return int.from_bytes(payload, "big")


def _strip_amf3_prefix(payload: bytes) -> bytes:
    # §7.1.1/§7.1.2: AMF3 command/data messages start with a format byte; encoders put 0 there
    # and write AMF0 after it (0x11 switches a value to AMF3, which amf0 rejects).
    return payload[1:] if payload[:1] == b"\x00" else payload


def _stream_id(value: Any) -> int:
    """A message stream id sent as an AMF0 number, or -1 if it is not a valid one."""
    if isinstance(value, float) and value.is_integer() and 0 <= value <= 0xFFFFFFFF:
        return int(value)
    return -1


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _str(args: list[Any]) -> str:
    return _as_str(args[0]) if args else ""


# -- client role -------------------------------------------------------------------------------
# The publisher's side of the same protocol: the demo publisher and the tests speak RTMP through
# it. ``RTMPClientMessages`` only serialises (the tests use it to send anything in any order);
# ``RTMPClientConnection`` keeps the state and reads the server's answers, sans-I/O like above.

_CSID_AUDIO = 4
_CSID_VIDEO = 6
_CSID_PUBLISH = 8
_FLASH_VER = "FMLE/3.0"  # what ffmpeg and OBS announce


class RTMPClientMessages:
    """Client messages as chunk bytes, the way ffmpeg writes them (chunk size 128 until changed)."""

    def __init__(self) -> None:
        self.writer = ChunkWriter()

    def command(self, *values: Any, stream_id: int = 0, csid: int = _CSID_COMMAND) -> bytes:
        return self.writer.write(csid, MSG_COMMAND_AMF0, stream_id, 0, amf0.encode(*values))

    def data(
        self, *values: Any, stream_id: int = 1, timestamp: int = 0, csid: int = _CSID_AUDIO
    ) -> bytes:
        """An AMF0 data message (``@setDataFrame``, ``onCuePoint`` …) on the media clock."""
        return self.writer.write(csid, MSG_DATA_AMF0, stream_id, timestamp, amf0.encode(*values))

    def media(self, type_id: int, payload: bytes, timestamp: int, stream_id: int = 1) -> bytes:
        """An audio (8) or video (9) message: an FLV tag body (see :mod:`ingest.rtmp.flv`)."""
        csid = _CSID_VIDEO if type_id == MSG_VIDEO else _CSID_AUDIO
        return self.writer.write(csid, type_id, stream_id, timestamp, payload)

    def control(self, type_id: int, payload: bytes) -> bytes:
        return self.writer.write(_CSID_CONTROL, type_id, 0, 0, payload)

    def set_chunk_size(self, size: int) -> bytes:
        """Set Chunk Size (§5.4.1); the messages after it are cut at ``size``."""
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {size} out of range")
        out = self.control(MSG_SET_CHUNK_SIZE, size.to_bytes(4, "big"))
        self.writer.chunk_size = size
        return out

    def connect(self, app: str = "live", tc_url: str = "", **extra: Any) -> bytes:
        obj = {"app": app, "type": "nonprivate", "flashVer": _FLASH_VER, "tcUrl": tc_url}
        return self.command("connect", 1.0, {**obj, **extra})

    def publish_preamble(self, name: str = "testkey") -> bytes:
        """releaseStream, FCPublish and createStream, as FMLE-style encoders send them."""
        return (
            self.command("releaseStream", 2.0, None, name)
            + self.command("FCPublish", 3.0, None, name)
            + self.command("createStream", 4.0, None)
        )

    def publish(self, name: str = "testkey", stream_id: int = 1) -> bytes:
        return self.command("publish", 5.0, None, name, "live", stream_id=stream_id, csid=8)


class ClientState(enum.Enum):
    """Client connection states, in the order a publisher walks through them."""

    HANDSHAKE = "handshake"  # C0+C1 sent, waiting for S0/S1/S2
    CONNECT = "connect"  # handshake done: connect may be sent
    CONNECT_PENDING = "connect pending"  # connect sent, waiting for its _result
    CONNECTED = "connected"  # createStream / publish
    PUBLISH_PENDING = "publish pending"  # publish sent, waiting for onStatus
    PUBLISHING = "publishing"  # media and data may be sent
    CLOSED = "closed"  # EOF, a protocol error or a refusal


class RTMPClientConnection:
    """A publisher's RTMP connection, client side, without I/O.

    The caller writes ``data_to_send()``, hands over what it reads with ``receive_data()`` and
    reads ``next_event()`` (:data:`ingest.rtmp.events.ClientEvent`) until ``NEED_DATA``. Commands
    may be queued before the handshake is done: they go out right behind C2.
    """

    def __init__(
        self,
        limits: RTMPLimits | None = None,
        *,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.limits = limits = limits or RTMPLimits()
        self.state = ClientState.HANDSHAKE
        self.stream_id = 0  # the message stream publish uses (createStream's answer)
        self.bytes_received = 0
        self.messages = RTMPClientMessages()
        self._amf_limits = amf0.AMF0Limits(
            limits.max_amf_depth, limits.max_amf_string, limits.max_amf_items, limits.max_amf_values
        )
        self._handshake = ClientHandshake(int(clock() * 1000), random_bytes)
        self._reader = ChunkStreamReader(
            max_chunk_size=limits.max_chunk_size,
            max_message_size=limits.max_message_size,
            max_buffered=limits.max_buffered,
            max_chunk_streams=limits.max_chunk_streams,
        )
        self._out = bytearray(self._handshake.data_to_send())
        self._held = bytearray()  # messages queued before the handshake finished
        self._events: deque[ClientEvent] = deque()
        self._eof = False
        self._ack_window = 0  # the server's Window Acknowledgement Size (§5.4.3)
        self._acked_at = 0
        self._next_transaction = 2.0  # 1 is connect's (§7.2.1.1)
        self._create_stream_tid: float | None = None

    # -- sending -------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.state is ClientState.CLOSED:
            raise RuntimeError("the connection is closed")
        if self._handshake.complete:
            self._out += data
        else:
            self._held += data

    def _transaction(self) -> float:
        tid = self._next_transaction
        self._next_transaction += 1.0
        return tid

    def connect(
        self, app: str, tc_url: str, chunk_size: int = OUT_CHUNK_SIZE, **extra: Any
    ) -> None:
        """Queue Set Chunk Size and ``connect`` (§7.2.1.1); answered by a :class:`CommandResult`."""
        if self.state not in (ClientState.HANDSHAKE, ClientState.CONNECT):
            raise RuntimeError(f"connect in state {self.state.value}")
        self._send(self.messages.set_chunk_size(chunk_size))
        self._send(self.messages.connect(app, tc_url, **extra))
        self.state = ClientState.CONNECT_PENDING

    def create_stream(self, name: str) -> float:
        """Queue releaseStream, FCPublish and createStream for ``name``; returns createStream's
        transaction id (its ``_result`` carries the stream id, kept in :attr:`stream_id`)."""
        if self.state not in (ClientState.CONNECT_PENDING, ClientState.CONNECTED):
            raise RuntimeError(f"createStream in state {self.state.value}")
        self._send(self.messages.command("releaseStream", self._transaction(), None, name))
        self._send(self.messages.command("FCPublish", self._transaction(), None, name))
        self._create_stream_tid = tid = self._transaction()
        self._send(self.messages.command("createStream", tid, None))
        return tid

    def publish(self, name: str, publish_type: str = "live") -> None:
        """Queue ``publish`` on the created stream (§7.2.2.6); answered by an onStatus."""
        if self.state is not ClientState.CONNECTED or not self.stream_id:
            raise RuntimeError(f"publish before a stream was created (state {self.state.value})")
        self._send(
            self.messages.command(
                "publish", self._transaction(), None, name, publish_type,
                stream_id=self.stream_id, csid=_CSID_PUBLISH,
            )
        )  # fmt: skip
        self.state = ClientState.PUBLISH_PENDING

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Queue an audio (8) or video (9) message carrying an FLV tag body."""
        self._require_publishing("media")
        if type_id not in (MSG_AUDIO, MSG_VIDEO):
            raise ValueError(f"message type {type_id} is not audio or video")
        self._send(self.messages.media(type_id, payload, timestamp, self.stream_id))

    def send_data(self, *values: Any, timestamp: int) -> None:
        """Queue an AMF0 data message (``@setDataFrame``, ``onCuePoint`` …) at ``timestamp``."""
        self._require_publishing("data")
        self._send(self.messages.data(*values, stream_id=self.stream_id, timestamp=timestamp))

    def unpublish(self, name: str) -> None:
        """Queue FCUnpublish and deleteStream; the connection can then be closed."""
        self._require_publishing("unpublish")
        self._send(self.messages.command("FCUnpublish", self._transaction(), None, name))
        stream = float(self.stream_id)
        self._send(self.messages.command("deleteStream", self._transaction(), None, stream))
        self.state = ClientState.CONNECTED

    def _require_publishing(self, what: str) -> None:
        if self.state is not ClientState.PUBLISHING:
            raise RuntimeError(f"{what} before publishing (state {self.state.value})")

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the server."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Hand over bytes read from the socket; ``b""`` means the server closed its side.
        Raises :class:`RTMPProtocolError` on bytes that break the protocol."""
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        if not data:
            self._eof = True
            return
        self.bytes_received += len(data)
        if self.state is ClientState.CLOSED:
            return
        if not self._handshake.complete:
            self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.complete:
                return
            self._events.append(HandshakeComplete(self._handshake.server_version, False))
            self._out += self._held
            self._held.clear()
            if self.state is ClientState.HANDSHAKE:
                self.state = ClientState.CONNECT
            data = self._handshake.leftover
        if data:
            self._reader.feed(data)
        while (msg := self._reader.next_message()) is not None:
            self._dispatch(msg)
        # §5.4.3: acknowledge once the server has sent a window's worth since our last ack
        if self._ack_window and self.bytes_received - self._acked_at >= self._ack_window:
            self._acked_at = self.bytes_received
            ack = (self.bytes_received & 0xFFFFFFFF).to_bytes(4, "big")
            self._out += self.messages.control(MSG_ACK, ack)

    def next_event(self) -> ClientEvent | _Sentinel:
        """The next event, ``NEED_DATA``, or ``ConnectionClosed`` once EOF was received."""
        if self._events:
            return self._events.popleft()
        if self._eof:
            self.state = ClientState.CLOSED
            return ConnectionClosed()
        return NEED_DATA

    def _dispatch(self, msg: ChunkMessage) -> None:
        t = msg.type_id
        if t == MSG_WINDOW_ACK_SIZE:
            self._ack_window = _u32(msg.payload, "Window Acknowledgement Size")
        elif t == MSG_USER_CONTROL:
            if len(msg.payload) == 6 and int.from_bytes(msg.payload[:2]) == UC_PING_REQUEST:
                pong = UC_PING_RESPONSE.to_bytes(2, "big") + msg.payload[2:6]
                self._out += self.messages.control(MSG_USER_CONTROL, pong)
        elif t in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            payload = _strip_amf3_prefix(msg.payload) if t == MSG_COMMAND_AMF3 else msg.payload
            self._command(msg.stream_id, amf0.decode_all(payload, self._amf_limits))
        # Set Chunk Size and Abort are applied by the reader; the rest carries nothing for us.

    def _command(self, stream_id: int, values: list[Any]) -> None:
        if len(values) < 2 or not isinstance(values[0], str) or not isinstance(values[1], float):
            raise RTMPProtocolError("command message without a name and transaction id")
        name, tid = values[0], values[1]
        obj = values[2] if len(values) > 2 else None
        if name in ("_result", "_error"):
            ev = CommandResult(name, tid, obj, tuple(values[3:]))
            if tid == 1.0 and self.state is ClientState.CONNECT_PENDING:
                self.state = ClientState.CONNECTED if name == "_result" else ClientState.CLOSED
            elif tid == self._create_stream_tid and name == "_result":
                self.stream_id = _stream_id(values[3]) if len(values) > 3 else -1
                if self.stream_id <= 0:
                    raise RTMPProtocolError("createStream answered without a stream id")
            self._events.append(ev)
        elif name == "onStatus":
            info = next((v for v in reversed(values) if isinstance(v, dict)), {})
            level, code = _as_str(info.get("level")), _as_str(info.get("code"))
            ev2 = StatusReceived(stream_id, level, code, _as_str(info.get("description")), info)
            if self.state is ClientState.PUBLISH_PENDING:
                if code == "NetStream.Publish.Start":
                    self.state = ClientState.PUBLISHING
                elif level == "error":
                    self.state = ClientState.CONNECTED
            elif self.state is ClientState.PUBLISHING and level == "error":
                self.state = ClientState.CLOSED  # the server ended the publish (§7.2.2)
            self._events.append(ev2)
        # onFCPublish, onBWDone …: notifications a publisher needs nothing from
