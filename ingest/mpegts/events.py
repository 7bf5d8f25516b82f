"""Events the MPEG-TS demuxer emits besides media (frozen dataclasses, h11 style).

Media itself is emitted as :class:`ingest.media.MediaUnit` on the 90 kHz clock, with PTS/DTS
unwrapped past the 33-bit counter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event()`` when the demuxer needs more bytes.
NEED_DATA = _Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class ElementaryStream:
    """One PMT entry; ``codec`` is ``None`` for stream types we do not carry."""

    pid: int
    stream_type: int
    codec: str | None


@dataclass(frozen=True, slots=True)
class ProgramChanged:
    """A PMT (first one, or a new version with other streams) selected these streams."""

    program_number: int
    version: int
    streams: tuple[ElementaryStream, ...]


@dataclass(frozen=True, slots=True)
class Resynced:
    """``skipped`` bytes were not 188-byte packets: sync was found again after them."""

    skipped: int


@dataclass(frozen=True, slots=True)
class DataDiscarded:
    """A PES packet or PSI section on ``pid`` was dropped, for ``reason``."""

    pid: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """``receive_data(b"")`` was called and everything pending was emitted."""
