"""HTTP control API (``/api/v1``): bearer-token auth, JSON errors, stream status."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from ingest.sessions import LiveStreams, PublishSession
from ingest.shown import shown
from packager import access
from packager.stores import StoreUnavailable
from shopcast.clips import CLIPS_KEY, ClipRefused
from shopcast.pipeline import Pipelines
from shopcast.recordings import Recordings
from shopcast.store import DatabaseUnavailable, Store, StoreError, StreamRecord, TagRecord
from shopcast.tags import TagError, TagService, tag_json
from transcode.policy import LadderConfigError, VerticalMode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORE_KEY: web.AppKey[Store] = web.AppKey("store")
STREAMS_KEY = web.AppKey("streams", LiveStreams)
TOKENS_KEY: web.AppKey[tuple[str, ...]] = web.AppKey("tokens")
TAGS_KEY = web.AppKey("tags", TagService)
UrlMaker = Callable[[str, str], dict[str, str]]
PIPELINES_KEY = web.AppKey("pipelines", Pipelines)
URLS_KEY: web.AppKey[UrlMaker] = web.AppKey("urls")
RECORDINGS_KEY = web.AppKey("recordings", Recordings)


class EdgeViewers:
    """Viewers per stream as edges report them: the sum over edges heard within ``window`` s."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self._reports: dict[str, tuple[float, dict[str, int]]] = {}

    def report(self, edge_id: str, viewers: dict[str, int]) -> None:
        now = self.clock()
        for edge in [e for e, (at, _) in self._reports.items() if now - at > self.window]:
            del self._reports[edge]  # silent edges stop counting (and stop taking memory)
        self._reports[edge_id] = (now, viewers)

    def get(self, stream_id: str, default: int = 0) -> int:
        now = self.clock()
        live = [v for at, v in self._reports.values() if now - at <= self.window]
        return sum(v.get(stream_id, 0) for v in live) if live else default


#: stream id → viewers, as reported by edges (``POST /api/v1/edge-reports``).
VIEWERS_KEY: web.AppKey[EdgeViewers] = web.AppKey("viewers")
#: Bounds of one edge report (a stream count is per edge, so a million is plenty).
MAX_REPORT_STREAMS, MAX_STREAM_VIEWERS = 10_000, 1_000_000
OPENAPI = Path(__file__).resolve().parent / "openapi.json"
#: Sent with 503s: when a client may try again.
RETRY_AFTER = {"Retry-After": "2"}
#: (playback secret, default token lifetime in seconds)
PLAYBACK_KEY: web.AppKey[tuple[str, int]] = web.AppKey("playback")


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The one error shape of the API: ``{"error": {"code", "message"}}``."""
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def token_matches(presented: str, tokens: Sequence[str]) -> bool:
    """Constant-time check against every configured token (no early exit)."""
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(presented.encode(), token.encode())
    return ok


@web.middleware
async def api_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and request.path != "/api/v1/openapi.json":
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return json_error(
                401, "unauthorized", "missing bearer token", **{"WWW-Authenticate": "Bearer"}
            )
        tokens: tuple[str, ...] = request.app[TOKENS_KEY]
        if not token_matches(presented.strip(), tokens):
            return json_error(
                401, "unauthorized", "invalid bearer token", **{"WWW-Authenticate": "Bearer"}
            )
    try:
        return await handler(request)
    except (ApiError, TagError, ClipRefused) as exc:
        return json_error(exc.status, exc.code, exc.message)
    except DatabaseUnavailable as exc:
        # Live shows go on from memory; what needs the database waits for it to come back.
        return json_error(
            exc.status, exc.code, f"the database is unavailable: {exc}", **RETRY_AFTER
        )
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            # Keep the exception's headers (RFC 9110: a 405 lists what is Allowed).
            extra = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, **extra)
        raise


def stream_status(record: StreamRecord, streams: LiveStreams) -> dict[str, Any]:
    session: PublishSession | None = streams.sessions.get(record.id)
    state = streams.states.get(record.id)
    out: dict[str, Any] = {
        "id": record.id,
        "state": "live" if session is not None else "offline",
        "created_at": record.created_at,
        "last_error": state.last_error if state else None,
        "ingest": None,
    }
    if session is not None:
        st = session.stats
        out["ingest"] = {
            "protocol": session.publisher.protocol,
            "peer": session.publisher.peer,
            "started_at": session.started_at,
            "video": {
                "codec": st.video_codec,
                "width": st.width,
                "height": st.height,
                "fps": st.fps,
                "frames_received": st.video_frames,
            },
            "audio": {
                "codec": st.audio_codec,
                "sample_rate": st.sample_rate,
                "channels": st.channels,
                "frames_received": st.audio_frames,
            },
            "bitrate": st.bitrate,
            "bytes_received": st.bytes_received,
            "hub_dropped": session.hub.dropped,
        }
    return out


def _renditions(request: web.Request, stream_id: str) -> list[dict[str, Any]]:
    pipelines = request.app[PIPELINES_KEY]
    pipeline = pipelines.pipelines.get(stream_id)
    if pipeline is None:
        return []
    lag = pipeline.transcoder.stats if pipeline.transcoder is not None else None
    out = []
    for name, r in pipeline.package.renditions.items():
        info = r.info
        stats = lag.renditions.get(name) if lag is not None else None
        variant = r.variant()
        out.append(
            {
                "name": name,
                "width": info.width,
                "height": info.height,
                "frame_rate": float(info.fps) if info.fps else None,
                "codecs": r.codecs,
                "bitrate": variant.average_bandwidth,
                "passthrough": info.passthrough,
                "encoder_lag_ms": {
                    "p50": round(stats.lag.p50 * 1000, 1) if stats else None,
                    "p99": round(stats.lag.p99 * 1000, 1) if stats else None,
                },
                "last_msn": (r.state.last_position or (None, None))[0],
            }
        )
    return out


def _status(request: web.Request, record: StreamRecord) -> dict[str, Any]:
    out = stream_status(record, request.app[STREAMS_KEY])
    out["renditions"] = _renditions(request, record.id)
    out["viewers"] = request.app[VIEWERS_KEY].get(record.id, 0)
    out["playback_url"] = request.app[URLS_KEY](record.id, "")["playback_url"]
    out["record"] = record.record
    pipeline = request.app[PIPELINES_KEY].pipelines.get(record.id)
    live = pipeline is not None and not pipeline.package.ended
    # "main" while the publisher's media plays, "slate" while it is replaced; null without a show.
    out["active_input"] = pipeline.package.active_input if live and pipeline else None
    return out


async def _record(request: web.Request) -> StreamRecord:
    record = await request.app[STORE_KEY].get_stream(request.match_info["id"])
    if record is None:
        raise ApiError(404, "not_found", f"stream {shown(request.match_info['id'])} does not exist")
    return record


class ApiError(Exception):
    """An API refusal: status, code, message (rendered by :func:`json_error`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _created(request: web.Request, record: StreamRecord, status: int) -> web.Response:
    body = {"id": record.id, "stream_key": record.stream_key}
    body.update(request.app[URLS_KEY](record.id, record.stream_key))
    return web.json_response(body, status=status)


async def create_stream(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"id"} or not isinstance(body.get("id"), str):
        raise ApiError(422, "invalid", 'the body must be {"id": "<stream id>"}')
    try:
        record = await request.app[STORE_KEY].create_stream(body["id"])
    except StoreError as exc:
        status = 409 if "already exists" in str(exc) else 422
        raise ApiError(status, "conflict" if status == 409 else "invalid", str(exc)) from exc
    return _created(request, record, 201)


async def list_streams(request: web.Request) -> web.Response:
    records = await request.app[STORE_KEY].list_streams()
    return web.json_response({"streams": [_status(request, rec) for rec in records]})


async def get_stream(request: web.Request) -> web.Response:
    return web.json_response(_status(request, await _record(request)))


async def delete_stream(request: web.Request) -> web.Response:
    """Delete a stream: its publisher is disconnected and its key stops working."""
    record = await _record(request)
    request.app[STREAMS_KEY].kick(record.id, "stream deleted")
    await request.app[STORE_KEY].delete_stream(record.id)
    return web.Response(status=204)


async def update_stream(request: web.Request) -> web.Response:
    """Change a stream's settings: ``{"record": bool}`` (applies from its next show on)."""
    record = await _record(request)
    body = await _json_body(request)
    if (
        not isinstance(body, dict)
        or set(body) != {"record"}
        or not isinstance(body["record"], bool)
    ):
        raise ApiError(422, "invalid", 'the body must be {"record": true|false}')
    await request.app[STORE_KEY].set_record(record.id, body["record"])
    return web.json_response(_status(request, await _record(request)))


async def list_recordings(request: web.Request) -> web.Response:
    record = await _record(request)
    recordings = request.app[RECORDINGS_KEY]
    rows = await recordings.for_stream(record.id)
    return web.json_response({"recordings": [await recordings.describe(r) for r in rows]})


async def _recording(request: web.Request) -> Any:
    row = await request.app[RECORDINGS_KEY].get(request.match_info["rid"])
    if row is None:
        raise ApiError(404, "not_found", "no such recording")
    return row


async def get_recording(request: web.Request) -> web.Response:
    row = await _recording(request)
    return web.json_response(await request.app[RECORDINGS_KEY].describe(row))


async def delete_recording(request: web.Request) -> web.Response:
    """Remove a recording's files/objects and its row (not while it still records)."""
    row = await _recording(request)
    recordings = request.app[RECORDINGS_KEY]
    if row.id in recordings.recorder.active:
        raise ApiError(409, "recording", "the recording is in progress; end the show first")
    try:
        await recordings.delete(row.id)
    except StoreUnavailable as exc:
        raise ApiError(503, "store_unavailable", str(exc)) from exc
    return web.Response(status=204)


async def rotate_key(request: web.Request) -> web.Response:
    """A new key at once; the old one is refused from now on (a live publisher stays on)."""
    record = await _record(request)
    return _created(request, await request.app[STORE_KEY].rotate_key(record.id), 200)


async def kick_publisher(request: web.Request) -> web.Response:
    record = await _record(request)
    if not request.app[STREAMS_KEY].kick(record.id, "disconnected through the API"):
        raise ApiError(409, "offline", f"stream {record.id!r} has no publisher")
    return web.Response(status=204)


async def end_show(request: web.Request) -> web.Response:
    """End the show now: publisher kicked, ENDLIST on every playlist, recording closed."""
    record = await _record(request)
    if not await request.app[PIPELINES_KEY].end_show(record.id, "show ended through the API"):
        raise ApiError(409, "offline", f"stream {record.id!r} has no show to end")
    return web.json_response({"id": record.id, "state": "ended"})


async def set_vertical(request: web.Request) -> web.Response:
    """Change the vertical policy (crop/pad and crop focus) of a live stream's transcoder."""
    record = await _record(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not body or set(body) - {"mode", "focus"}:
        raise ApiError(422, "invalid", 'the body must be {"mode": "crop"|"pad", "focus": 0..1}')
    pipeline = request.app[PIPELINES_KEY].pipelines.get(record.id)
    transcoder = pipeline.transcoder if pipeline is not None else None
    if transcoder is None or record.id not in request.app[STREAMS_KEY].sessions:
        raise ApiError(409, "offline", f"stream {record.id!r} is not live")
    policy = transcoder.vertical
    try:
        if "mode" in body:
            policy = replace(policy, mode=VerticalMode(body["mode"]))
        if "focus" in body:
            focus = body["focus"]
            if isinstance(focus, bool) or not isinstance(focus, int | float):
                raise ValueError("focus must be a number")
            policy = replace(policy, focus=float(focus))
    except (ValueError, LadderConfigError) as exc:
        raise ApiError(422, "invalid", str(exc)) from exc
    transcoder.set_vertical(policy)
    return web.json_response({"mode": policy.mode.value, "focus": policy.focus})


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError) as exc:  # nesting deeper than the parser's stack: 400 too
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from exc


def origin_url(request: web.Request, path: str) -> str:
    """``path`` on this origin as clients reach it (the host of every other URL we hand out)."""
    playback = request.app[URLS_KEY]("", "")["playback_url"]
    return playback.partition("/hls/")[0] + path


def _tag_out(request: web.Request, rec: TagRecord) -> dict[str, Any]:
    out = tag_json(rec)
    out["thumbnail_url"] = origin_url(request, f"/hls/{rec.stream_id}/tags/{rec.id}.jpg")
    return out


#: What anyone may see of a tag: what its DATERANGE and emsg already carry in the playlists and
#: segments, and its thumbnail (the replay page's data; no clicks, no source pts).
PUBLIC_TAG_FIELDS = (
    "id",
    "kind",
    "product_id",
    "data",
    "duration",
    "program_date_time",
    "thumbnail_url",
)


def public_tag(request: web.Request, rec: TagRecord) -> dict[str, Any]:
    out = _tag_out(request, rec)
    return {name: out[name] for name in PUBLIC_TAG_FIELDS}


async def create_tag(request: web.Request) -> web.Response:
    body = await _json_body(request)
    rec = await request.app[TAGS_KEY].create(request.match_info["id"], body)
    return web.json_response(_tag_out(request, rec), status=201)


async def list_tags(request: web.Request) -> web.Response:
    records = await request.app[TAGS_KEY].list(request.match_info["id"])
    return web.json_response({"tags": [_tag_out(request, r) for r in records]})


async def create_clip(request: web.Request) -> web.Response:
    """Cut a clip of a recording: ``{"tag_id"}`` or ``{"start", "end"}`` (+ ``max_duration``)."""
    body = await _json_body(request)
    try:
        clip = await request.app[CLIPS_KEY].create(request.match_info["rid"], body)
    except StoreUnavailable as exc:
        raise ApiError(503, "store_unavailable", str(exc)) from exc
    clip["url"] = origin_url(request, clip["url"])
    return web.json_response(clip, status=201)


async def playback_token(request: web.Request) -> web.Response:
    """Mint a signed playback URL for a stream (when playback is protected)."""
    record = await _record(request)
    secret, default_ttl = request.app[PLAYBACK_KEY]
    if not secret:
        raise ApiError(409, "not_configured", "playback is open: set playback.secret first")
    body = await _json_body(request) if request.can_read_body else {}
    if not isinstance(body, dict) or set(body) - {"ttl"}:
        raise ApiError(422, "invalid", 'the body must be {} or {"ttl": seconds}')
    ttl = body.get("ttl", default_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 7 * 86400:
        raise ApiError(422, "invalid", "ttl must be whole seconds in 1..604800")
    expires = int(time.time()) + ttl
    token = access.mint(secret, record.id, expires)
    url = request.app[URLS_KEY](record.id, "")["playback_url"]
    return web.json_response(
        {
            "token": token,
            "expires_at": expires,
            "playback_url": f"{url}?{access.TOKEN_PARAM}={token}",
        },
        status=201,
    )


async def edge_report(request: web.Request) -> web.Response:
    """An edge's viewer counts: ``{"edge_id": str, "viewers": {stream_id: int}}``."""
    body = await _json_body(request)
    shape = 'the body must be {"edge_id": "<name>", "viewers": {"<stream id>": <count>}}'
    if not isinstance(body, dict) or set(body) != {"edge_id", "viewers"}:
        raise ApiError(422, "invalid", shape)
    edge_id, viewers = body["edge_id"], body["viewers"]
    if not isinstance(edge_id, str) or not 1 <= len(edge_id) <= 128:
        raise ApiError(422, "invalid", "edge_id must be a string of 1..128 characters")
    if not isinstance(viewers, dict) or len(viewers) > MAX_REPORT_STREAMS:
        raise ApiError(422, "invalid", f"viewers must map at most {MAX_REPORT_STREAMS} streams")
    counts: dict[str, int] = {}
    for stream_id, count in viewers.items():
        if isinstance(count, float) and count.is_integer():
            count = int(count)  # JSON Schema: 3.0 is an integer
        if (
            not 1 <= len(stream_id) <= 128
            or isinstance(count, bool)
            or not isinstance(count, int)
            or not 0 <= count <= MAX_STREAM_VIEWERS
        ):
            raise ApiError(
                422, "invalid", f"viewers maps stream ids to counts in 0..{MAX_STREAM_VIEWERS}"
            )
        counts[stream_id] = count
    request.app[VIEWERS_KEY].report(edge_id, counts)
    return web.Response(status=204)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=OPENAPI.read_text(), content_type="application/json")


async def click_beacon(request: web.Request) -> web.Response:
    """A viewer pressed "buy" on a tag's card (public: the shop pages call it);
    ``?source=replay`` from the replay page, ``live`` (the default) from the live one."""
    clicks = await request.app[TAGS_KEY].click(
        request.match_info["stream_id"],
        request.match_info["tag_id"],
        request.query.get("source", "live"),
    )
    if clicks is None:
        return json_error(404, "not_found", "no such tag")
    return web.json_response({"clicks": clicks}, headers={"Access-Control-Allow-Origin": "*"})


def make_app(
    store: Store,
    streams: LiveStreams,
    tokens: Sequence[str],
    tags: TagService,
    pipelines: Pipelines,
    urls: UrlMaker,
    playback: tuple[str, int] = ("", 3600),
    recordings: Recordings | None = None,
) -> web.Application:
    """The origin's aiohttp application with the control API mounted."""
    app = web.Application(middlewares=[api_auth], client_max_size=64 * 1024)
    app[STORE_KEY] = store
    app[STREAMS_KEY] = streams
    app[TOKENS_KEY] = tuple(tokens)
    app[TAGS_KEY] = tags
    app[PIPELINES_KEY] = pipelines
    app[URLS_KEY] = urls
    app[VIEWERS_KEY] = EdgeViewers()
    app[PLAYBACK_KEY] = playback
    if recordings is not None:
        app[RECORDINGS_KEY] = recordings
        app.router.add_patch("/api/v1/streams/{id}", update_stream)
        app.router.add_get("/api/v1/streams/{id}/recordings", list_recordings)
        app.router.add_get("/api/v1/recordings/{rid}", get_recording)
        app.router.add_delete("/api/v1/recordings/{rid}", delete_recording)
        app.router.add_post("/api/v1/recordings/{rid}/clips", create_clip)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/streams", create_stream)
    app.router.add_get("/api/v1/streams", list_streams)
    app.router.add_get("/api/v1/streams/{id}", get_stream)
    app.router.add_delete("/api/v1/streams/{id}", delete_stream)
    app.router.add_post("/api/v1/streams/{id}/key", rotate_key)
    app.router.add_delete("/api/v1/streams/{id}/publisher", kick_publisher)
    app.router.add_post("/api/v1/streams/{id}/end", end_show)
    app.router.add_patch("/api/v1/streams/{id}/vertical", set_vertical)
    app.router.add_post("/api/v1/streams/{id}/playback-token", playback_token)
    app.router.add_post("/api/v1/streams/{id}/tags", create_tag)
    app.router.add_get("/api/v1/streams/{id}/tags", list_tags)
    app.router.add_post("/api/v1/edge-reports", edge_report)
    app.router.add_post("/beacon/{stream_id}/tags/{tag_id}/click", click_beacon)
    return app
