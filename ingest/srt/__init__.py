"""SRT ingest: libsrt (through ``native.libsrt``) carries MPEG-TS into the stream hubs."""

from __future__ import annotations

from ingest.srt.streamid import PublishRequest, StreamIdError, parse_stream_id

__all__ = ["PublishRequest", "StreamIdError", "parse_stream_id"]
