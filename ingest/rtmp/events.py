"""Events the RTMP connection cores emit, server and client role (frozen dataclasses, h11 style).

Media itself is emitted as :class:`ingest.media.MediaUnit` (timestamps unwrapped to 64-bit
milliseconds, ``pts = dts + composition time``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event()`` when the core needs more bytes.
NEED_DATA = _Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """C0/C1/C2 received and S0/S1/S2 queued (§5.2)."""

    client_version: int
    digest: bool  # the client sent a digest-style (Flash 9+) C1


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """``connect`` command; answer with ``accept_connect()`` or ``reject_connect()``."""

    transaction_id: float
    app: str
    tc_url: str
    flash_ver: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """``publish`` command; answer with ``accept_publish()`` or ``reject_publish()``."""

    transaction_id: float
    message_stream_id: int
    app: str
    stream_name: str  # validated: bounded length, no '/', '..' or control characters
    query: str  # what followed '?' in the publish name, if anything
    publish_type: str  # "live", "record", "append"


@dataclass(frozen=True, slots=True)
class MetaData:
    """``@setDataFrame``/``onMetaData`` properties as sent by the encoder."""

    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DataMessage:
    """Any other AMF0 data message (``onCuePoint``, ``onTextData``, …) with its stream timestamp."""

    name: str
    args: tuple[Any, ...]
    timestamp: int  # unwrapped milliseconds, same clock as media units


@dataclass(frozen=True, slots=True)
class PublishEnded:
    """The publisher unpublished (``FCUnpublish``, ``deleteStream`` or ``closeStream``)."""

    message_stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``)."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Client role: a ``_result`` or ``_error`` answer to one of its commands (§7.2.1)."""

    name: str  # "_result" or "_error"
    transaction_id: float
    command_object: Any
    values: tuple[Any, ...]  # what follows the command object: an info object, a stream id

    @property
    def info(self) -> dict[str, Any]:
        """The info object (level, code, description), or {} when there is none."""
        return next((v for v in reversed(self.values) if isinstance(v, dict)), {})


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Client role: an ``onStatus`` from the server (§7.2.2), e.g. ``NetStream.Publish.Start``."""

    message_stream_id: int
    level: str
    code: str
    description: str
    info: dict[str, Any] = field(default_factory=dict)


Event = (
    HandshakeComplete
    | ConnectRequested
    | PublishRequested
    | MetaData
    | DataMessage
    | PublishEnded
    | ConnectionClosed
)

#: What :class:`ingest.rtmp.connection.RTMPClientConnection` emits.
ClientEvent = HandshakeComplete | CommandResult | StatusReceived | ConnectionClosed
