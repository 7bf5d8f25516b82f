"""Blocking playlist reload and delta update requests (S 6.2.5.2, S 6.2.5.1), pure: no I/O.

What a client asked for with ``_HLS_msn``/``_HLS_part``/``_HLS_skip``, whether the request is
valid against the playlist as it stands (the 400 rules), and whether the playlist satisfies it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from packager.playlist import MediaPlaylistState

#: Longest decimal integer accepted for ``_HLS_msn``/``_HLS_part`` (fits 64 bits).
MAX_DIGITS = 19


class BadReloadRequest(ValueError):
    """The request breaks a rule of S 6.2.5.2: answer 400 with this message."""


@dataclass(frozen=True)
class ReloadRequest:
    """A media playlist request's directives."""

    msn: int | None = None
    part: int | None = None
    skip: str | None = None  # "YES" or "v2"; rendering ignores other values (S 6.2.5.1)
    #: Hold the request until the playlist has ``msn``/``part``; never once it has ENDLIST.
    blocking: bool = False


def advance_part_limit(part_target: Fraction) -> int:
    """S 6.2.5.2: how far past the last part ``_HLS_part`` may reach before it is a 400."""
    return math.ceil(3 / part_target) if part_target < 1 else 3


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    # isascii: str.isdigit() also holds for digits int() refuses, such as "²".
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS:
        raise BadReloadRequest(f"{name} must be a decimal integer")
    return int(raw)


def parse_reload(
    query: Mapping[str, str], state: MediaPlaylistState, segment_duration: Fraction
) -> ReloadRequest:
    """The directives of ``query`` checked against ``state``; raises ``BadReloadRequest``."""
    msn = _int_param(query, "_HLS_msn")
    part = _int_param(query, "_HLS_part")
    skip = query.get("_HLS_skip")
    if part is not None and msn is None:
        raise BadReloadRequest("S 6.2.5.2: _HLS_part requires _HLS_msn")
    blocking = msn is not None and not state.ended  # S 6.2.5.2: ignored once ENDLIST is there
    if blocking and msn is not None:
        last = state.last_position or (state.next_part[0] - 1, -1)
        if msn > last[0] + 2:
            raise BadReloadRequest(
                "S 6.2.5.2: _HLS_msn is greater than the last Media Sequence Number plus two"
            )
        if part is not None:
            per_segment = math.ceil(segment_duration / state.part_target)
            ahead = (msn - last[0]) * per_segment + part - last[1]
            if ahead > advance_part_limit(state.part_target):
                raise BadReloadRequest(
                    "S 6.2.5.2: _HLS_part exceeds the last part by the Advance Part Limit"
                )
    return ReloadRequest(msn, part, skip, blocking)


def satisfied(state: MediaPlaylistState, msn: int, part: int | None) -> bool:
    """Whether the playlist already holds segment ``msn`` (or its part ``part``)."""
    if state.ended:
        return True
    for seg in reversed(state.segments):
        if seg.msn > msn and (seg.complete or seg.parts):
            return True
        if seg.msn == msn:
            if part is None:
                return seg.complete
            # A part index past the segment's last part means part 0 of the next one
            # (hls.js #5608).
            return part < len(seg.parts)
    return False
