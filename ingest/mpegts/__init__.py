"""MPEG-TS ingest core (sans-I/O): what SRT carries."""

from __future__ import annotations

from ingest.mpegts.demuxer import TS_CLOCK, TSDemuxer, TSLimits, TSStats
from ingest.mpegts.errors import MPEGTSError, UnsupportedStreamError
from ingest.mpegts.events import (
    NEED_DATA,
    DataDiscarded,
    ElementaryStream,
    ProgramChanged,
    Resynced,
    StreamEnded,
)

__all__ = [
    "NEED_DATA",
    "TS_CLOCK",
    "DataDiscarded",
    "ElementaryStream",
    "MPEGTSError",
    "ProgramChanged",
    "Resynced",
    "StreamEnded",
    "TSDemuxer",
    "TSLimits",
    "TSStats",
    "UnsupportedStreamError",
]
