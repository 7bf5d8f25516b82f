"""Errors of the MPEG-TS demuxer: the only exceptions it raises."""

from __future__ import annotations


class MPEGTSError(Exception):
    """The byte stream is not MPEG-TS we can follow (the publisher is dropped)."""


class UnsupportedStreamError(MPEGTSError):
    """The program carries media we cannot take (e.g. MPEG-2 video, MP3 audio)."""
