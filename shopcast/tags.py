"""Product tags: validation, rate limit, durable storage, then stamping into the live stream."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any, Protocol

from ingest.sessions import MAIN_INPUT, LiveStreams, PublishSession
from ingest.shown import shown
from packager.playlist import format_pdt
from packager.tags import TAG_CLASSES
from shopcast.pipeline import Pipelines
from shopcast.store import CLICK_SOURCES, DatabaseUnavailable, Store, TagRecord

log = logging.getLogger(__name__)

MAX_PAYLOAD = 8 * 1024  # bytes of JSON in "data"
MAX_FUTURE = 10.0  # seconds ahead of the newest frame an "at" may name
MAX_DURATION = 24 * 3600.0
_KEYS = {"kind", "product_id", "data", "duration", "end", "at"}


class TagError(Exception):
    """A refused tag: HTTP status, error code and a message for the caller."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class TokenBucket:
    """``rate`` tags per second, bursts of up to ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.last = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def parse_date(value: str) -> float:
    """An ISO 8601 date-time with a zone (as in START-DATE) → epoch seconds."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TagError(422, "invalid", f"not an ISO 8601 date-time: {value!r}") from exc
    if dt.tzinfo is None:
        raise TagError(422, "invalid", "date-times need a time zone (e.g. a trailing Z)")
    return dt.timestamp()


def tag_json(rec: TagRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "stream_id": rec.stream_id,
        "kind": rec.kind,
        "product_id": rec.product_id,
        "data": rec.data,
        "duration": rec.duration,
        "pts": rec.pts,
        "program_date_time": format_pdt(rec.program_date_time),
        "source": rec.source,
        "late": rec.late,
        "clicks": rec.clicks,
        "clicks_by_source": rec.clicks_by_source,
        "created_at": rec.created_at,
    }


@dataclass(frozen=True)
class TagRequest:
    kind: str
    product_id: str | None
    data: dict[str, Any]
    duration: float | None
    at: int | float | None  # source pts (ms, int) or program date-time (epoch seconds, float)
    end: float | None = None  # epoch seconds; the duration follows once the start is known


def _utf8(value: str) -> bool:
    """Whether ``value`` is valid Unicode text (JSON escapes can carry lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def validate(body: Any) -> TagRequest:
    """Check a tag body; ``TagError`` 422 with the first problem found."""
    if not isinstance(body, dict):
        raise TagError(422, "invalid", "the body must be a JSON object")
    unknown = set(body) - _KEYS
    if unknown:
        raise TagError(422, "invalid", f"unknown field(s): {', '.join(sorted(unknown))}")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in TAG_CLASSES:
        raise TagError(422, "invalid", f"kind must be one of {', '.join(TAG_CLASSES)}")
    product_id = body.get("product_id")
    if product_id is not None and (
        not isinstance(product_id, str)
        or not 0 < len(product_id) <= 128
        or any(c in product_id for c in '"\r\n')
        or not _utf8(product_id)
    ):
        raise TagError(422, "invalid", "product_id must be 1-128 characters without quotes")
    if kind == "product" and product_id is None:
        raise TagError(422, "invalid", "a product tag needs a product_id")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise TagError(422, "invalid", "data must be a JSON object")
    try:
        # Stored, returned and put in ID3 as standard JSON in UTF-8: no NaN/Infinity (Python's
        # parser accepts them), no lone surrogates.
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(encoded.encode())
    except (ValueError, RecursionError) as exc:
        raise TagError(
            422, "invalid", f"data must be standard JSON in valid Unicode: {exc}"
        ) from exc
    if size > MAX_PAYLOAD:
        raise TagError(422, "invalid", f"data is larger than {MAX_PAYLOAD} bytes")
    duration = body.get("duration")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not 0 < duration <= MAX_DURATION
    ):
        raise TagError(422, "invalid", "duration must be a number of seconds in (0, 86400]")
    at_raw = body.get("at")
    at: int | float | None
    if at_raw is None:
        at = None
    elif isinstance(at_raw, int) and not isinstance(at_raw, bool) and at_raw >= 0:
        at = at_raw
    elif isinstance(at_raw, float) and at_raw.is_integer() and 0 <= at_raw < 2**63:
        at = int(at_raw)  # JSON does not tell 12 from 12.0
    elif isinstance(at_raw, str):
        at = parse_date(at_raw)
    else:
        raise TagError(422, "invalid", "at must be a source PTS (ms) or an ISO 8601 date-time")
    end_raw = body.get("end")
    end: float | None = None
    if end_raw is not None:
        if duration is not None:
            raise TagError(422, "invalid", "give duration or end, not both")
        if not isinstance(end_raw, str):
            raise TagError(422, "invalid", "end must be an ISO 8601 date-time")
        # Only the format here: whether it lies after the tagged frame is known once stamped.
        end = parse_date(end_raw)
    if kind == "deal" and duration is None and end is None:
        raise TagError(422, "invalid", "a deal needs a duration or an end")
    if kind == "poll":
        question, options = data.get("question"), data.get("options")
        if not isinstance(question, str) or not (
            isinstance(options, list) and 2 <= len(options) <= 10
        ):
            raise TagError(422, "invalid", "a poll needs data.question and 2-10 data.options")
    return TagRequest(kind, product_id, data, duration, at, end)


class TagListener(Protocol):
    """Told of tag events (for metrics)."""

    def tag_created(self, record: TagRecord) -> None: ...

    def tag_clicked(self, stream_id: str, source: str) -> None: ...


class TagService:
    """Accepts tags from the API and from publisher cue points; stored before acknowledged."""

    def __init__(
        self,
        store: Store,
        streams: LiveStreams,
        pipelines: Pipelines,
        *,
        rate: float = 100.0,
        burst: float = 200.0,
        clock: Callable[[], float] = time.time,
        listeners: Sequence[TagListener] = (),
    ) -> None:
        self.store = store
        self.listeners = list(listeners)
        self.streams = streams
        self.pipelines = pipelines
        self.rate, self.burst = rate, burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._cue_tasks: set[asyncio.Task[None]] = set()  # cue points being stored
        streams.on_data.append(self._on_cue_point)

    async def create(self, stream_id: str, body: Any, source: str = "api") -> TagRecord:
        """Validate, stamp, store, then place the tag; every refusal is a ``TagError``
        (``DatabaseUnavailable`` when the tag cannot be stored)."""
        if await self.store.get_stream(stream_id) is None:
            raise TagError(404, "not_found", f"stream {shown(stream_id)} does not exist")
        bucket = self._buckets.setdefault(stream_id, TokenBucket(self.rate, self.burst))
        if not bucket.take(self.clock()):
            raise TagError(429, "rate_limited", f"more than {self.rate:g} tags/s on this stream")
        req = validate(body)
        pipeline = self.pipelines.pipelines.get(stream_id)
        # The input feeding the show (a tag lands on its frames after a switch).
        feeding = pipeline.package.input if pipeline is not None else MAIN_INPUT
        session = self.streams.input_session(stream_id, feeding)
        slate_time = pipeline.package.slate_time() if pipeline is not None else None
        if pipeline is not None and slate_time is not None and session is None and req.at is None:
            # On slate the tag timeline keeps working: the tag lands on the newest slate frame
            # (its "pts" is that frame's time on the slate's timeline, in ms).
            package = pipeline.package
            out, pts_ms = slate_time, round(slate_time * 1000)
        else:
            if session is None or pipeline is None or pipeline.transcoder is None:
                raise TagError(409, "offline", f"stream {stream_id!r} is not live")
            package, timeline = pipeline.package, pipeline.transcoder.timeline
            if not package.renditions or timeline.origin is None:
                raise TagError(409, "not_ready", "the stream has no media out yet; retry shortly")
            out, pts_ms = self._resolve(req.at, session, package, timeline)
        duration = req.duration
        tag = package.prepare_tag(
            self._new_id(), req.kind, out, req.data, duration=duration, product_id=req.product_id
        )
        if req.end is not None:  # an "end" date: the duration from the tagged frame
            duration = req.end - tag.program_date_time
            if duration <= 0:
                raise TagError(422, "invalid", "end must come after the tagged frame")
            if duration > MAX_DURATION:
                raise TagError(422, "invalid", "end must be at most 86400 s after the frame")
            tag = package.prepare_tag(
                tag.id, req.kind, out, req.data, duration=duration, product_id=req.product_id
            )
        record = TagRecord(
            id=tag.id,
            stream_id=stream_id,
            kind=req.kind,
            product_id=req.product_id,
            data=req.data,
            duration=duration,
            pts=pts_ms,
            program_date_time=tag.program_date_time,
            source=source,
            late=False,
            clicks=0,
            created_at=self.clock(),
        )
        await self.store.insert_tag(record)  # durable before anyone hears "201"
        if package.place_tag(tag):
            await self.store.set_tag_late(tag.id)
            record = TagRecord(**{**record.__dict__, "late": True})
        for listener in self.listeners:
            listener.tag_created(record)
        return record

    async def click(self, stream_id: str, tag_id: str, source: str = "live") -> int | None:
        """Count a buy-button click made on the ``source`` page (live or replay); the tag's
        click total, or ``None`` if there is no such tag."""
        if source not in CLICK_SOURCES:
            raise TagError(422, "invalid", f"source must be one of {', '.join(CLICK_SOURCES)}")
        clicks = await self.store.count_click(stream_id, tag_id, source)
        if clicks is not None:
            for listener in self.listeners:
                listener.tag_clicked(stream_id, source)
        return clicks

    def _resolve(
        self, at: int | float | None, session: PublishSession, package: Any, timeline: Any
    ) -> tuple[Fraction, int]:
        """(output time, source pts in ms) of the frame a tag names."""
        window = package.live_window()
        if at is None or isinstance(at, int):
            pts_ms = session.stats.newest_pts_ms if at is None else at
            if pts_ms is None:
                raise TagError(409, "not_ready", "no frame received yet")
            out = timeline.output_time(Fraction(pts_ms, 1000))
        else:
            out = package.session_time_of(at)
            if out is None:
                raise TagError(409, "not_ready", "no media out yet")
            pts_ms = round((out + timeline.origin) * 1000)
        if out is None or window is None:
            raise TagError(409, "not_ready", "no media out yet")
        oldest, newest = window
        newest_in = timeline.output_time(Fraction(session.stats.newest_pts_ms or 0, 1000))
        if out < oldest or out > max(newest, newest_in or newest) + Fraction(MAX_FUTURE):
            raise TagError(422, "out_of_window", "at is outside the stream's live window")
        return out, int(pts_ms)

    def _new_id(self) -> str:
        # Time-ordered and random: never reused, also across restarts (S 4.4.5.1 IDs are forever).
        return f"t{int(self.clock() * 1000):x}{secrets.token_hex(4)}"

    def _on_cue_point(
        self, session: PublishSession, name: str, args: tuple[Any, ...], timestamp: int
    ) -> None:
        """``onCuePoint``/``onTextData`` (or ``@setDataFrame`` ``onShopcastTag``) → a tag on
        the frame at the message's own timestamp."""
        body = cue_point_body(name, args)
        if body is None:
            return
        body["at"] = max(timestamp, 0)
        task = asyncio.get_running_loop().create_task(self._cue_tag(session, name, body))
        self._cue_tasks.add(task)
        task.add_done_callback(self._cue_tasks.discard)

    async def _cue_tag(self, session: PublishSession, name: str, body: dict[str, Any]) -> None:
        try:
            rec = await self.create(session.stream_id, body, source="cue")
        except TagError as exc:
            log.warning("[%s] cue point %s refused: %s", session.stream_id, name, exc.message)
        except DatabaseUnavailable as exc:
            log.warning("[%s] cue point %s not stored: %s", session.stream_id, name, exc)
        else:
            log.info(
                "[%s] cue point %s → tag %s at %d ms", session.stream_id, name, rec.id, rec.pts
            )

    async def list(self, stream_id: str) -> list[TagRecord]:
        if await self.store.get_stream(stream_id) is None:
            raise TagError(404, "not_found", f"stream {shown(stream_id)} does not exist")
        return await self.store.list_tags(stream_id)


def cue_point_body(name: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
    """The tag a publisher's AMF data message asks for, if it carries a shopcast payload.

    Accepted shapes: ``onCuePoint`` with ``parameters`` holding the tag fields (the FLV cue
    point object), ``onTextData`` whose ``text`` is tag JSON, and ``@setDataFrame`` /
    ``onShopcastTag`` with the fields in an object.
    """
    if name == "@setDataFrame" and args and args[0] == "onShopcastTag":
        name, args = "onShopcastTag", args[1:]
    obj = args[0] if args and isinstance(args[0], dict) else None
    if obj is None:
        return None
    fields: Any
    if name == "onCuePoint":
        fields = obj.get("parameters")
    elif name == "onTextData":
        try:
            fields = json.loads(obj.get("text", ""))
        except (TypeError, ValueError):
            return None
    elif name == "onShopcastTag":
        fields = obj
    else:
        return None
    if not isinstance(fields, dict) or "kind" not in fields:
        return None
    body = {k: fields[k] for k in ("kind", "product_id", "duration") if k in fields}
    data = fields.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            data = {"text": data}
    if isinstance(data, dict):
        body["data"] = data
    if isinstance(body.get("duration"), float) and body["duration"].is_integer():
        body["duration"] = int(body["duration"])
    return body
