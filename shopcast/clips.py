"""Clips of recorded shows: ``POST /api/v1/recordings/{rid}/clips`` cuts one (worker thread)
into the recordings store, ``GET /clips/<clip_id>.mp4`` serves it.

Times in requests and responses are seconds from the recording's start, as its VOD playlist
counts them (the sum of the segment durations before).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from packager.clips import ClipError, ClipTag, RecordedSegment, covering, cut_clip
from packager.stores import RecordingStore, StoreUnavailable
from packager.tags import Tag
from packager.vod import RenditionRecord
from shopcast.recordings import Recordings

DEFAULT_MAX_DURATION = 30.0
MAX_DURATION_CAP = 300.0
#: ``secrets.token_urlsafe(16)``: 128 random bits, unguessable.
CLIP_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
#: Float seconds from manifests: this close to the recording's end still counts as inside.
_SLACK = 0.001
_KEYS = {"tag_id", "start", "end", "max_duration"}


class ClipRefused(Exception):
    """A refused clip: HTTP status, error code and a message for the caller."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ClipRequest:
    tag_id: str | None
    start: float | None
    end: float | None
    max_duration: float


def _seconds(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ClipRefused(422, "invalid", f"{name} must be a number of seconds")
    return float(value)


def validate(body: Any) -> ClipRequest:
    """Check a clip body; ``ClipRefused`` 422 with the first problem found."""
    shape = 'the body must be {"tag_id": "<id>"} or {"start": s, "end": s}, + "max_duration"'
    if not isinstance(body, dict) or set(body) - _KEYS:
        raise ClipRefused(422, "invalid", shape)
    tag_id = body.get("tag_id")
    start, end = _seconds(body, "start"), _seconds(body, "end")
    max_duration = _seconds(body, "max_duration")
    if max_duration is None:
        max_duration = DEFAULT_MAX_DURATION
    if not 0 < max_duration <= MAX_DURATION_CAP:
        raise ClipRefused(422, "invalid", f"max_duration must be in (0, {MAX_DURATION_CAP:g}] s")
    if tag_id is not None:
        if start is not None or end is not None:
            raise ClipRefused(422, "invalid", "give tag_id or start/end, not both")
        if not isinstance(tag_id, str) or not 0 < len(tag_id) <= 64:
            raise ClipRefused(422, "invalid", "tag_id must be a tag's id")
        return ClipRequest(tag_id, None, None, max_duration)
    if start is None or end is None:
        raise ClipRefused(422, "invalid", shape)
    if end <= start:
        raise ClipRefused(422, "invalid_range", "end must be after start")
    if end - start > max_duration + _SLACK:
        raise ClipRefused(
            422,
            "too_long",
            f"the range is {end - start:g} s, longer than max_duration ({max_duration:g} s)",
        )
    return ClipRequest(None, start, end, max_duration)


class Timeline:
    """A rendition's recorded segments on the recording's clock (seconds from its start)."""

    def __init__(self, rendition: RenditionRecord) -> None:
        self.segments = rendition.segments
        self.starts: list[float] = []
        total = 0.0
        for seg in self.segments:
            self.starts.append(total)
            total += seg.duration
        self.duration = total
        self._dates = [s.program_date_time for s in self.segments]

    def _last_starting_by(self, program_date_time: float) -> int | None:
        i = bisect.bisect_right(self._dates, program_date_time + _SLACK) - 1
        return i if i >= 0 else None

    def index_of(self, program_date_time: float) -> int | None:
        """The segment whose span holds the date, if one does."""
        i = self._last_starting_by(program_date_time)
        if i is None:
            return None
        seg = self.segments[i]
        return i if program_date_time < seg.program_date_time + seg.duration - _SLACK else None

    def time_of(self, program_date_time: float) -> float | None:
        """Recording seconds of a program date-time (None before the first segment)."""
        i = self._last_starting_by(program_date_time)
        if i is None:
            return None
        seg = self.segments[i]
        # A date in a gap (a reconnect) maps to the next segment's start.
        return self.starts[i] + min(program_date_time - seg.program_date_time, seg.duration)

    def spans(self) -> list[tuple[float, float]]:
        return [(t, s.duration) for t, s in zip(self.starts, self.segments, strict=True)]


def top_rendition(renditions: Sequence[RenditionRecord]) -> RenditionRecord | None:
    """The recorded rendition clips and posters come from: the largest picture."""
    videos = [r for r in renditions if r.width and r.height and r.segments]
    return max(videos, key=lambda r: (r.height, r.bandwidth), default=None)


class ClipService:
    """Cuts clips from recordings into the recordings store (``clips/<clip_id>.mp4``)."""

    def __init__(self, recordings: Recordings) -> None:
        self.recordings = recordings
        recordings.on_delete.append(self.delete_clips_of)

    @property
    def media(self) -> RecordingStore:
        return self.recordings.media

    async def create(self, recording_id: str, body: Any) -> dict[str, Any]:
        """Validate, cut, store; the clip as the API returns it (``url`` is a path)."""
        if await self.recordings.get(recording_id) is None:
            raise ClipRefused(404, "not_found", "no such recording")
        req = validate(body)
        vod = await self.recordings.vod(recording_id)
        if vod is None:
            raise ClipRefused(404, "not_found", "no such recording")
        rendition = top_rendition(vod.manifest.renditions)
        if rendition is None:
            raise ClipRefused(422, "empty", "the recording holds no video yet")
        timeline = Timeline(rendition)
        start, end = self._range(req, timeline, vod.tags)
        picked = covering(timeline.spans(), start, end)
        prefix = f"{vod.manifest.id}/{rendition.name}"
        init = await self.media.get(f"{prefix}/init.mp4")
        if init is None:
            raise ClipRefused(409, "incomplete", "the init segment is missing from the store")
        segments = []
        for i in picked:
            seg = rendition.segments[i]
            if seg.map is not None:  # a slate with its own avcC: the clip's one init won't do
                raise ClipRefused(422, "uncuttable", "the range covers the slate of a dropped show")
            data = await self.media.get(f"{prefix}/{seg.msn}.m4s")
            if data is None:
                raise ClipRefused(409, "incomplete", f"segment {seg.msn} is missing from the store")
            segments.append(
                RecordedSegment(timeline.starts[i], seg.duration, data, seg.discontinuity)
            )
        tags = []
        for tag in vod.tags:
            at = timeline.time_of(tag.program_date_time)
            if at is not None:
                tags.append(ClipTag(tag.id, at, tag.id3()))
        try:
            clip = await asyncio.to_thread(cut_clip, init, segments, start, end, tags)
        except ClipError as exc:
            raise ClipRefused(422, "uncuttable", str(exc)) from exc
        clip_id = secrets.token_urlsafe(16)  # unguessable: the URL is the only key
        out: dict[str, Any] = {
            "id": clip_id,
            "recording_id": vod.manifest.id,
            "url": f"/clips/{clip_id}.mp4",
            "start": round(clip.start, 3),
            "end": round(clip.end, 3),
            "duration": round(clip.duration, 3),
            "tag_ids": list(clip.tag_ids),
            "bytes": len(clip.data),
        }
        await self.media.put(f"clips/{clip_id}.mp4", clip.data, "video/mp4")
        # Listed under its recording, so it goes when the recording goes (DELETE, retention).
        note = json.dumps(out, separators=(",", ":")).encode()
        await self.media.put(f"{vod.manifest.id}/clips/{clip_id}.json", note, "application/json")
        return out

    async def delete_clips_of(self, recording_id: str) -> None:
        """Remove the clips cut from a recording (its ``clips/`` notes name them)."""
        for key in await self.media.list(f"{recording_id}/clips/"):
            clip_id = key.rsplit("/", 1)[-1].removesuffix(".json")
            if CLIP_ID_RE.match(clip_id):
                await self.media.delete_prefix(f"clips/{clip_id}.mp4")

    def _range(self, req: ClipRequest, timeline: Timeline, tags: list[Tag]) -> tuple[float, float]:
        total = timeline.duration
        if req.tag_id is None:
            assert req.start is not None and req.end is not None
            if req.start < 0 or req.end > total + _SLACK:
                raise ClipRefused(
                    422,
                    "out_of_range",
                    f"the range {req.start:g}..{req.end:g} s is outside the recording "
                    f"(0..{total:.3f} s)",
                )
            return req.start, min(req.end, total)
        tag = next((t for t in tags if t.id == req.tag_id), None)
        start = timeline.time_of(tag.program_date_time) if tag is not None else None
        if tag is None or start is None:
            raise ClipRefused(422, "unknown_tag", "tag_id names no tag of this recording")
        later = [
            at
            for t in tags
            if t.kind == "product"
            and (at := timeline.time_of(t.program_date_time)) is not None
            and at > start + _SLACK
        ]
        end = min([start + req.max_duration, total, *later])
        if end <= start:
            raise ClipRefused(422, "out_of_range", "the tag's frame is at the recording's end")
        return start, end

    async def get(self, clip_id: str) -> bytes | None:
        if not CLIP_ID_RE.match(clip_id):
            return None
        return await self.media.get(f"clips/{clip_id}.mp4")


CLIPS_KEY = web.AppKey("clips", ClipService)


async def clip_file(request: web.Request) -> web.StreamResponse:
    """The clip's MP4, with byte ranges (players fetch progressive MP4 in ranges)."""
    try:
        data = await request.app[CLIPS_KEY].get(request.match_info["clip_id"])
    except StoreUnavailable as exc:
        raise web.HTTPServiceUnavailable(
            text=f"the recordings store is unavailable: {exc}"
        ) from exc
    if data is None:
        raise web.HTTPNotFound(text="no such clip")
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Accept-Ranges": "bytes",
        "Cache-Control": "public, max-age=31536000, immutable",  # a clip never changes
    }
    try:
        wanted = request.http_range
    except ValueError:
        wanted = slice(None)
    if wanted.start is None and wanted.stop is None:
        return web.Response(body=data, content_type="video/mp4", headers=headers)
    first, stop, _ = wanted.indices(len(data))
    if first >= stop:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{len(data)}"})
    headers["Content-Range"] = f"bytes {first}-{stop - 1}/{len(data)}"
    return web.Response(
        status=206, body=data[first:stop], content_type="video/mp4", headers=headers
    )


def add_clip_routes(app: web.Application, clips: ClipService) -> None:
    """``GET /clips/<clip_id>.mp4`` (public: whoever has the URL may watch the clip)."""
    app[CLIPS_KEY] = clips
    app.router.add_get("/clips/{clip_id}.mp4", clip_file)
