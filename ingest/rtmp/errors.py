"""Errors raised by the RTMP sans-I/O core."""


class RTMPProtocolError(Exception):
    """The peer broke the protocol or a bound; the connection must be closed with this reason."""


class ChunkStreamError(RTMPProtocolError):
    """The chunk stream is malformed or exceeds a configured bound."""
