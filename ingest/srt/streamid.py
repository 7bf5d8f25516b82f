"""SRT stream ids a publisher may send, parsed without trusting them.

Accepted forms (the SRT access-control syntax, and what phone apps and encoders let users type):

* ``#!::r=<stream id>,m=publish,k=<stream key>`` — ``r`` optional (when given it must be the
  stream the key belongs to), ``m`` optional but only ``publish`` is served;
* ``publish:<stream key>``;
* a bare stream key.

The stream key travels in the stream id, not as the SRT passphrase: it is the same secret RTMP
and WHIP use (one resolve path, rotation through the API), and a wrong key is then refused by
name (SRT reject code 1401 in the handshake) instead of failing the encryption handshake like a
mistyped passphrase. The passphrase, when configured, only encrypts the transport. The stream
id is not encrypted by SRT (nor is an RTMP URL): use the passphrase on untrusted networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from ingest.shown import shown

#: libsrt bounds SRTO_STREAMID at 512 bytes; so do we, before decoding.
MAX_STREAM_ID = 512
_ACCESS_PREFIX = "#!::"
_PUBLISH_PREFIX = "publish:"
_ENCODED_PREFIXES = ("%23", "publish%3A", "publish%3a")


class StreamIdError(ValueError):
    """The stream id cannot name a publish (its message quotes peer strings cut short)."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What an SRT caller asks for: publish with ``key``, to ``stream_id`` if it said which."""

    key: str
    stream_id: str | None = None


def parse_stream_id(raw: bytes) -> PublishRequest:
    """Parse a caller's SRTO_STREAMID; raises :class:`StreamIdError` with a short reason."""
    if not raw:
        raise StreamIdError("no stream id: send streamid=#!::m=publish,k=<stream key>")
    if len(raw) > MAX_STREAM_ID:
        raise StreamIdError(f"stream id longer than {MAX_STREAM_ID} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamIdError("stream id is not UTF-8") from None
    if text.startswith(_ENCODED_PREFIXES):  # a client that percent-encoded the URL parameter
        text = unquote(text)
    if not text.isprintable():
        raise StreamIdError("stream id holds control characters")
    if text.startswith(_ACCESS_PREFIX):
        return _access_control(text[len(_ACCESS_PREFIX) :])
    if text.startswith(_PUBLISH_PREFIX):
        return PublishRequest(_key(text[len(_PUBLISH_PREFIX) :]))
    if ":" in text or "=" in text or "," in text:
        raise StreamIdError(f"unrecognised stream id {shown(text)}")
    return PublishRequest(_key(text))


def _access_control(body: str) -> PublishRequest:
    fields: dict[str, str] = {}
    for item in body.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise StreamIdError(f"stream id item {shown(item)} is not key=value")
        if name in fields:
            raise StreamIdError(f"stream id repeats {shown(name)}")
        fields[name] = value
    mode = fields.get("m", "publish")
    if mode != "publish":
        raise StreamIdError(f"mode {shown(mode)} is not served: SRT here is for publishing")
    if "k" not in fields:
        raise StreamIdError("stream id has no k=<stream key>")
    resource = fields.get("r")
    if resource is not None and not resource:
        raise StreamIdError("stream id has an empty r=")
    return PublishRequest(_key(fields["k"]), resource)


def _key(key: str) -> str:
    if not key:
        raise StreamIdError("empty stream key")
    return key
