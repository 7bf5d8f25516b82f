"""Tags placed on a live show: a DATERANGE in every playlist and an emsg ID3 box in the part of
every rendition that holds the tagged frame."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction
from typing import Any

from packager.playlist import DateRangeLine
from packager.rendition import RenditionOutput
from packager.show import ShowTimeline
from packager.tags import Tag, TagTimeline, show_daterange


class TagPlacer:
    """Puts tags on the show's timeline and into its renditions' media."""

    def __init__(self, show: ShowTimeline, target_duration: int) -> None:
        self.show = show
        self.target_duration = target_duration
        self.timeline = TagTimeline()
        self._event_ids = 0
        self._show_range: tuple[DateRangeLine, float] | None = None  # (line, when listed)

    def open_show(self, start: float) -> None:
        """List the show's own range (``tags.show_daterange``) from ``start`` (the program
        date-time of its first frame); later calls keep the first.

        When the show's start is known from its lease, the range starts there instead: every
        origin owning the show in turn lists the same range, same ID and START-DATE
        (S 4.4.5.1: an ID is never reused with other attributes).
        """
        if self._show_range is None:
            if self.show.start is not None:
                start = self.show.start.started_at
            self._show_range = (show_daterange(start), self.show.clock())

    def restore(self, tags: Iterable[Tag], oldest_listed: float) -> int:
        """List the ranges of tags placed by a previous owner of the show, with their IDs and
        dates (their emsg boxes are in that owner's media). Ranges that ended before
        ``oldest_listed`` (the oldest date the previous owner could still list) stay out
        (S 4.4.5.1); so do IDs already on the timeline. Returns how many were listed."""
        now = self.show.clock()
        known = {t.id for t in self.timeline.tags}
        restored = TagTimeline()
        for tag in tags:
            if tag.id not in known:
                time = self.show.packaged_time_of(tag.program_date_time)
                # Listed anew here: a delta update must not leave it out yet (``dateranges``).
                restored.add(replace(tag, time=time, added_at=now))
        restored.prune(oldest_listed, now, remember=0.0)
        for tag in restored.tags:
            self.timeline.add(tag)
        return len(restored.tags)

    def prepare(
        self,
        tag_id: str,
        kind: str,
        time: Fraction,
        payload: dict[str, Any],
        *,
        duration: float | None = None,
        product_id: str | None = None,
    ) -> Tag:
        """A tag at ``time`` (seconds on the current session's output timeline), snapped to the
        video frame grid, with the program date-time of that frame; nothing is placed yet."""
        show = self.show
        packaged = show.offset + show.on_grid(time)
        return Tag(
            id=tag_id,
            kind=kind,
            time=packaged,
            program_date_time=show.program_date_time(packaged),
            payload=payload,
            duration=duration,
            product_id=product_id,
            added_at=show.clock(),
        )

    def place(self, tag: Tag, renditions: Iterable[RenditionOutput]) -> bool:
        """Put ``tag`` into ``renditions`` and the playlists' ranges. Returns whether it came
        late (its frame's part was already published: the emsg rides in the next part, still
        with the frame's time)."""
        data = tag.id3()
        time = tag.time - self.show.offset
        late = False
        for r in renditions:
            late |= not r.stamp_tag(time, data, self._next_event_id)
        self.timeline.add(tag)
        return late

    def _next_event_id(self) -> int:
        self._event_ids += 1
        return self._event_ids & 0xFFFFFFFF

    def prune(self, oldest_listed: float, remember: float) -> None:
        """Drop ranges that end before ``oldest_listed`` (S 4.4.5.1); see ``TagTimeline``."""
        self.timeline.prune(oldest_listed, self.show.clock(), remember)

    def dateranges(self) -> list[DateRangeLine]:
        """DATERANGE lines for every media playlist; identical across renditions."""
        settled_before = self.show.clock() - float(6 * self.target_duration) / 2
        show: list[DateRangeLine] = []
        if self._show_range is not None:
            line, listed_at = self._show_range
            show.append(replace(line, settled=listed_at <= settled_before))
        return show + [
            DateRangeLine(
                t.id,
                t.daterange,
                t.program_date_time,
                t.added_at <= settled_before,
            )
            for t in self.timeline.tags
        ]

    def removed_ids(self) -> list[str]:
        """IDs of ranges dropped lately, for RECENTLY-REMOVED-DATERANGES (S 4.4.5.2)."""
        return [i for i, _ in self.timeline.removed]
