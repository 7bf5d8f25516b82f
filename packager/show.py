"""The show's packaged timeline: where each publisher session sits on it, its frame grid, the
wall-clock date (PROGRAM-DATE-TIME) of every time on it, and where sequence numbers start."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

#: Timestamps on the packaged timeline start here, so B-frame and AAC-priming decode times
#: that the encoders put slightly before zero stay positive in ``tfdt``.
TIMELINE_START = Fraction(10)


class ShowTimeline:
    """One show's timeline across publisher reconnects, the same for every rendition."""

    def __init__(self, segment_duration: Fraction, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.segment_duration = segment_duration
        # Sequence numbers start from the wall clock, so a restarted server never reuses a
        # part or segment URI that a CDN may still hold (they are cached as immutable).
        self.first_msn = int(clock() // float(segment_duration))
        #: Packaged time of the current session's time 0.
        self.offset = TIMELINE_START
        #: The video frame rate that times are snapped to; ``None`` until the ladder is known.
        self.frame_rate: Fraction | None = None
        self._epoch: float | None = None  # wall clock of packaged time 0
        self._session_end = TIMELINE_START

    @property
    def pinned(self) -> bool:
        """Whether the current session's media has tied the timeline to the wall clock."""
        return self._epoch is not None

    def pin_clock(self, arrival: float, session_time: Fraction) -> None:
        """Tie the wall clock to the session's first packet (ingest ``arrival``, its time)."""
        if self._epoch is None:
            self._epoch = arrival - float(self.offset + session_time)

    def media_until(self, session_time: Fraction) -> None:
        """The current session's media reaches ``session_time`` (its end, not its start)."""
        self._session_end = max(self._session_end, self.offset + session_time)

    def on_grid(self, seconds: Fraction) -> Fraction:
        """``seconds`` snapped to the video frame grid.

        A passthrough rung keeps the source's millisecond timestamps while re-encoded rungs sit
        on the 1/fps grid; snapping what gets a PROGRAM-DATE-TIME makes the same frame carry the
        same date on every rendition (LLHLS_RULES: PDT consistent across renditions).
        """
        fps = self.frame_rate
        return Fraction(round(seconds * fps)) / fps if fps else seconds

    def program_date_time(self, seconds: Fraction) -> float:
        """Wall-clock time of a packaged timestamp: the same on every rendition."""
        return (self._epoch or self.clock()) + float(seconds)

    def session_time_of(self, program_date_time: float) -> Fraction | None:
        """Inverse of the PDT mapping: seconds on the current session's output timeline."""
        if self._epoch is None:
            return None
        return Fraction(program_date_time - self._epoch) - self.offset

    def continue_after_reconnect(self) -> Fraction:
        """A publisher came back: its media starts a segment after the last one; new offset."""
        # On the frame grid, so grid-snapped times stay consistent across the discontinuity.
        self.offset = self.on_grid(self._session_end + self.segment_duration)
        self._epoch = None
        return self.offset

    def continue_on_slate(self) -> Fraction:
        """The slate follows the last media at once, on the same wall clock: the PDT grid and
        timestamps go on where the media stopped (on the next frame-grid time)."""
        fps = self.frame_rate
        end = self._session_end
        self.offset = Fraction(math.ceil(end * fps)) / fps if fps else end
        return self.offset

    def continue_on_switch(self, start: Fraction) -> Fraction:
        """Another input takes over with its frame at ``start`` (its session time): that frame
        follows the last media at once on the same wall clock, so the PDT grid has no gap."""
        # Rounded, not ceiled: a passthrough rung's millisecond times sit a hair off the grid.
        self.offset = self.on_grid(self._session_end) - start
        return self.offset
