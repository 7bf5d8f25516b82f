"""The show's packaged timeline: where each publisher session sits on it, its frame grid, the
wall-clock date (PROGRAM-DATE-TIME) of every time on it, and where sequence numbers start."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

#: Timestamps on the packaged timeline start here, so B-frame and AAC-priming decode times
#: that the encoders put slightly before zero stay positive in ``tfdt``.
TIMELINE_START = Fraction(10)
#: Sequence numbers each owner of a stream starts above the wall-clock segment count, per
#: owner (the lease's epoch): an owner numbers one segment per segment duration from there, so
#: it runs ahead of its own start only by its PRELOAD-HINT's segment (hls.js keeps it as a
#: fragment) and by the short segments before a discontinuity (a publisher reconnect, the
#: slate): the next owner starts this many above, plus the time that passed.
MSN_PER_OWNER = 4


@dataclass(frozen=True)
class ShowStart:
    """Where a show stands when this origin starts packaging it (read from the stream's lease).

    ``started_at`` is the wall clock at the show's start, the same for every origin that owns
    the show in turn; ``owner_epoch`` counts the stream's owners (the lease's fencing token,
    strictly increasing); ``continued`` says the show was live on another origin moments ago.
    """

    started_at: float
    owner_epoch: int
    continued: bool = False


class ShowTimeline:
    """One show's timeline across publisher reconnects, the same for every rendition."""

    def __init__(
        self,
        segment_duration: Fraction,
        clock: Callable[[], float],
        start: ShowStart | None = None,
    ) -> None:
        self.clock = clock
        self.segment_duration = segment_duration
        self.start = start
        now = clock()
        # Sequence numbers start from the wall clock, so a restarted server never reuses a
        # part or segment URI that a CDN may still hold (they are cached as immutable), and
        # each owner of the stream starts a block above the previous one (MSN_PER_OWNER): a
        # show continued from another origin goes on above every number the previous owner
        # listed or hinted (S 6.2.1: they never go back; hls.js fails a reload whose numbers
        # overlap the previous one's with other URIs), and still close to the wall clock: a
        # client places a reload that shares no segment with the last one by its sequence
        # numbers (hls.js: the gap in numbers × TARGETDURATION), so the numbers follow time.
        self.first_msn = int(now // float(segment_duration))
        if start is not None:
            self.first_msn += start.owner_epoch * MSN_PER_OWNER
        #: Packaged time of the current session's time 0. A continued show's timestamps go on
        #: rising from its start on the wall clock (to the millisecond), as if one origin had
        #: packaged it all: its tags keep their order on the timeline.
        self.offset = TIMELINE_START
        if start is not None and start.continued:
            self.offset += max(Fraction(round((now - start.started_at) * 1000), 1000), Fraction(0))
        #: The video frame rate that times are snapped to; ``None`` until the ladder is known.
        self.frame_rate: Fraction | None = None
        self._epoch: float | None = None  # wall clock of packaged time 0
        self._session_end = self.offset
        #: The current session's media end per timescale, in integer ticks (``media_until_ticks``),
        #: folded into ``_session_end`` when the offset moves.
        self._tick_ends: dict[int, int] = {}

    @property
    def continued(self) -> bool:
        """Whether this origin continues a show another origin was packaging moments ago."""
        return self.start is not None and self.start.continued

    @property
    def first_discontinuity_sequence(self) -> int:
        """EXT-X-DISCONTINUITY-SEQUENCE of the first playlist (S 4.4.3.3).

        A continued show's first segment follows a discontinuity, and its discontinuity
        sequence number must exceed every one the previous owner listed (S 6.2.2: it never
        decreases, and hls.js keys timestamp offsets on it). Counted from the show's start on
        the wall clock, no segment of the show has a number above its media sequence number's
        distance from there: each segment adds at most one discontinuity, and every owner
        starts at least that far (see ``first_msn``). This owner's first number exceeds the
        previous owner's last, so its first segment gets that distance. The numbers stay small
        (the show's segments, not the epoch's): hls.js keeps arrays indexed by them.
        """
        if self.start is None or not self.start.continued:
            return 0
        show_msn = int(self.start.started_at // float(self.segment_duration))
        return max(self.first_msn - show_msn - 1, 0)

    def packaged_time_of(self, program_date_time: float) -> Fraction:
        """Where a wall-clock date of this show lies on the packaged timeline, before this
        origin has media (a continued show's earlier tags): the show's start at
        ``TIMELINE_START``, the wall clock's rate after it."""
        start = self.start.started_at if self.start is not None else self.clock()
        return TIMELINE_START + Fraction(round((program_date_time - start) * 1000), 1000)

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

    def media_until_ticks(self, ticks: int, timescale: int) -> None:
        """``media_until(Fraction(ticks, timescale))`` on integers: called per packet, so no
        Fraction is built until the offset moves."""
        ends = self._tick_ends
        end = ends.get(timescale)
        if end is None or ticks > end:
            ends[timescale] = ticks

    @property
    def session_end(self) -> Fraction:
        """Packaged time up to which the current session's media reaches."""
        for timescale, ticks in self._tick_ends.items():
            self._session_end = max(self._session_end, self.offset + Fraction(ticks, timescale))
        self._tick_ends.clear()
        return self._session_end

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
        self.offset = self.on_grid(self.session_end + self.segment_duration)
        self._epoch = None
        return self.offset

    def continue_on_slate(self) -> Fraction:
        """The slate follows the last media at once, on the same wall clock: the PDT grid and
        timestamps go on where the media stopped (on the next frame-grid time)."""
        fps = self.frame_rate
        end = self.session_end
        self.offset = Fraction(math.ceil(end * fps)) / fps if fps else end
        return self.offset

    def continue_on_switch(self, start: Fraction) -> Fraction:
        """Another input takes over with its frame at ``start`` (its session time): that frame
        follows the last media at once on the same wall clock, so the PDT grid has no gap."""
        # Rounded, not ceiled: a passthrough rung's millisecond times sit a hair off the grid.
        self.offset = self.on_grid(self.session_end) - start
        return self.offset
