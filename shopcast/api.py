"""HTTP control API (``/api/v1``): bearer-token auth, JSON errors, stream status."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ingest.sessions import MAIN_INPUT, LiveStreams, PublishSession
from ingest.shown import shown
from packager import access
from packager.origin import HOMES_KEY, StreamOwners
from packager.playlist import format_pdt
from packager.stores import StoreUnavailable
from shopcast.clips import CLIPS_KEY, ClipRefused
from shopcast.cluster import ClusterView, NodeRegistry
from shopcast.config import ClusterSection, ContinuitySection
from shopcast.pipeline import Pipelines, SwitchFailed
from shopcast.recordings import Recordings
from shopcast.store import (
    DatabaseUnavailable,
    NodeRecord,
    Store,
    StoreError,
    StreamRecord,
    TagRecord,
)
from shopcast.tags import TagError, TagService, tag_json
from transcode.policy import LadderConfigError, VerticalMode

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORE_KEY: web.AppKey[Store] = web.AppKey("store")
STREAMS_KEY = web.AppKey("streams", LiveStreams)
TOKENS_KEY: web.AppKey[tuple[str, ...]] = web.AppKey("tokens")
TAGS_KEY = web.AppKey("tags", TagService)
UrlMaker = Callable[[str, str], dict[str, str]]
PIPELINES_KEY = web.AppKey("pipelines", Pipelines)
URLS_KEY: web.AppKey[UrlMaker] = web.AppKey("urls")
RECORDINGS_KEY = web.AppKey("recordings", Recordings)


#: The cluster's node table: edges' viewer reports (``POST /api/v1/edge-reports``) are edge
#: rows there, so every origin sums the same viewers; stream owners and placement too.
REGISTRY_KEY = web.AppKey("registry", NodeRegistry)
#: Bounds of one edge report (a stream count is per edge, so a million is plenty).
MAX_REPORT_STREAMS, MAX_STREAM_VIEWERS = 10_000, 1_000_000
OPENAPI = Path(__file__).resolve().parent / "openapi.json"
#: Sent with 503s: when a client may try again.
RETRY_AFTER = {"Retry-After": "2"}
#: (playback secret, default token lifetime in seconds)
PLAYBACK_KEY: web.AppKey[tuple[str, int]] = web.AppKey("playback")
#: In a cluster: which origin owns a live stream (see :func:`at_owner`).
OWNERS_KEY: web.AppKey[StreamOwners] = web.AppKey("api_owners")
FORWARD_SESSION_KEY: web.AppKey[ForwardSession] = web.AppKey("api_forward_session")
#: Set on a request one origin forwards to a stream's owner: the owner answers it itself.
FORWARDED_HEADER = "X-Shopcast-Forwarded-By"
#: Bound on a forwarded call (the owner stores and stamps a tag in milliseconds).
FORWARD_TIMEOUT = 5.0
#: What a forwarded answer keeps of the owner's headers.
_FORWARD_KEPT = ("Content-Type", "Retry-After", "WWW-Authenticate", "Allow")


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
    except ApiError as exc:
        return json_error(exc.status, exc.code, exc.message, **exc.headers)
    except (TagError, ClipRefused) as exc:
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


def _status(request: web.Request, record: StreamRecord, cluster: ClusterView) -> dict[str, Any]:
    out = stream_status(record, request.app[STREAMS_KEY])
    out["renditions"] = _renditions(request, record.id)
    out["viewers"] = cluster.viewers(record.id)
    origin = cluster.origin(record.id)
    # The origin owning the stream's live lease (null: nobody publishes it).
    out["origin"] = {"node_id": origin.node_id, "http_url": origin.http_url} if origin else None
    registry = request.app[REGISTRY_KEY]
    here = registry.record.node_id if registry.record is not None else None
    if origin is not None and origin.node_id != here:
        # Live on another origin: its ingest and renditions are the owner's to tell
        # (GET /api/v1/streams/{id} answers from there).
        out["state"] = "live"
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
    """An API refusal: status, code, message (rendered by :func:`json_error`), extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


async def _created(request: web.Request, record: StreamRecord, status: int) -> web.Response:
    """The stream's key and publish URLs on the origin with the most free capacity (playback
    stays this origin's)."""
    body = {"id": record.id, "stream_key": record.stream_key}
    body.update(await _placed(request, record))
    body["playback_url"] = request.app[URLS_KEY](record.id, "")["playback_url"]
    return web.json_response(body, status=status)


def ingest_urls(node: NodeRecord, record: StreamRecord) -> dict[str, str]:
    """Where to publish ``record`` on ``node``: RTMP with the key, WHIP, SRT when it takes SRT."""
    urls = {
        "node_id": node.node_id,
        "rtmp_url": f"{node.rtmp_url}/{record.stream_key}",
        "whip_url": f"{node.http_url}/whip/{record.id}",
    }
    if node.srt_url:
        # Raw, not percent-encoded: ffmpeg 5.1 and phone apps pass streamid on verbatim.
        stream = f"#!::r={record.id},m=publish,k={record.stream_key}"
        urls["srt_url"] = f"{node.srt_url}?streamid={stream}"
    return urls


async def _placed(request: web.Request, record: StreamRecord) -> dict[str, str]:
    """Publish URLs on the live origin with the most free capacity (this one when the node
    table has none, e.g. the database just went away)."""
    registry = request.app[REGISTRY_KEY]
    try:
        node = await registry.placement()
    except DatabaseUnavailable:
        node = None
    node = node or registry.record
    if node is None:  # not registered yet: this origin's own URLs
        urls = request.app[URLS_KEY](record.id, record.stream_key)
        return {k: v for k, v in urls.items() if k != "playback_url"} | {"node_id": ""}
    return ingest_urls(node, record)


async def create_stream(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"id"} or not isinstance(body.get("id"), str):
        raise ApiError(422, "invalid", 'the body must be {"id": "<stream id>"}')
    try:
        record = await request.app[STORE_KEY].create_stream(body["id"])
    except StoreError as exc:
        status = 409 if "already exists" in str(exc) else 422
        raise ApiError(status, "conflict" if status == 409 else "invalid", str(exc)) from exc
    return await _created(request, record, 201)


async def ingest_for(request: web.Request) -> web.Response:
    """Publish URLs for the stream on the origin with the most free capacity."""
    return web.json_response(await _placed(request, await _record(request)))


async def list_streams(request: web.Request) -> web.Response:
    records = await request.app[STORE_KEY].list_streams()
    cluster = await request.app[REGISTRY_KEY].view()
    return web.json_response({"streams": [_status(request, rec, cluster) for rec in records]})


async def get_stream(request: web.Request) -> web.Response:
    record = await _record(request)
    cluster = await request.app[REGISTRY_KEY].view()
    return web.json_response(_status(request, record, cluster))


def node_json(node: NodeRecord) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "role": node.role,
        "alive": node.alive,
        "http_url": node.http_url,
        "rtmp_url": node.rtmp_url or None,
        "srt_url": node.srt_url or None,
        "capacity": node.capacity,
        "load": node.load,
        "viewers": node.viewers,
        "started_at": node.started_at,
        "heartbeat_at": node.heartbeat_at,
    }


async def list_nodes(request: web.Request) -> web.Response:
    """Every origin and edge of the cluster, with whether it is alive."""
    nodes = await request.app[REGISTRY_KEY].nodes()
    return web.json_response({"nodes": [node_json(n) for n in nodes]})


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
    cluster = await request.app[REGISTRY_KEY].view()
    return web.json_response(_status(request, await _record(request), cluster))


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
    return await _created(request, await request.app[STORE_KEY].rotate_key(record.id), 200)


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


# -- named inputs and switching (multi-camera) ---------------------------------------------
def _input_json(request: web.Request, stream_id: str, name: str, backup: bool) -> dict[str, Any]:
    streams = request.app[STREAMS_KEY]
    pipeline = request.app[PIPELINES_KEY].pipelines.get(stream_id)
    live = pipeline is not None and not pipeline.package.ended
    return {
        "name": name,
        "backup": backup,
        "publishing": streams.input_session(stream_id, name) is not None,
        "active": live and pipeline is not None and pipeline.package.input == name,
    }


async def create_input(request: web.Request) -> web.Response:
    """A named input (a second camera, a backup encoder) with its own key and publish URLs."""
    record = await _record(request)
    body = await _json_body(request)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("name"), str)
        or set(body) - {"name", "backup"}
        or not isinstance(body.get("backup", False), bool)
    ):
        raise ApiError(422, "invalid", 'the body must be {"name": "<input>", "backup": false}')
    try:
        named = await request.app[STORE_KEY].create_input(
            record.id, body["name"], body.get("backup", False)
        )
    except StoreError as exc:
        status = 409 if "already exists" in str(exc) else 422
        raise ApiError(status, "conflict" if status == 409 else "invalid", str(exc)) from exc
    out = _input_json(request, record.id, named.name, named.backup)
    out["stream_key"] = named.stream_key
    # The publish URLs of the stream, with the input's key (RTMP, WHIP's bearer, SRT): on this
    # origin when the show is on here (every input of a show must feed the same origin).
    keyed = replace(record, stream_key=named.stream_key)
    pipeline = request.app[PIPELINES_KEY].pipelines.get(record.id)
    here = request.app[REGISTRY_KEY].record
    if pipeline is not None and not pipeline.package.ended and here is not None:
        out.update(ingest_urls(here, keyed))
    else:
        out.update(await _placed(request, keyed))
    return web.json_response(out, status=201)


async def list_inputs(request: web.Request) -> web.Response:
    """The stream's inputs, ``main`` (the stream's own key) first."""
    record = await _record(request)
    named = await request.app[STORE_KEY].list_inputs(record.id)
    inputs = [_input_json(request, record.id, MAIN_INPUT, False)]
    inputs += [_input_json(request, record.id, n.name, n.backup) for n in named]
    return web.json_response({"inputs": inputs})


async def delete_input(request: web.Request) -> web.Response:
    """Delete a named input: its key stops working and its publisher is disconnected."""
    record = await _record(request)
    name = request.match_info["name"]
    if name == MAIN_INPUT:
        raise ApiError(422, "invalid", "the main input is the stream's own key: it cannot go")
    pipeline = request.app[PIPELINES_KEY].pipelines.get(record.id)
    if pipeline is not None and not pipeline.package.ended and pipeline.package.input == name:
        raise ApiError(409, "active", f"input {name!r} feeds the show: switch away first")
    if not await request.app[STORE_KEY].delete_input(record.id, name):
        raise ApiError(404, "not_found", f"stream {record.id!r} has no input {name[:64]!r}")
    streams = request.app[STREAMS_KEY]
    session = streams.input_session(record.id, name)
    if session is not None:
        streams.end(session, "input deleted", clean=True)
        session.publisher.kick("input deleted")
    return web.Response(status=204)


async def switch_input(request: web.Request) -> web.Response:
    """Switch every rendition to another input at its next keyframe; answers once it did."""
    record = await _record(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) != {"input"} or not isinstance(body["input"], str):
        raise ApiError(422, "invalid", 'the body must be {"input": "<input name>"}')
    name = body["input"]
    pipeline = request.app[PIPELINES_KEY].pipelines.get(record.id)
    if pipeline is None or pipeline.package.ended:
        raise ApiError(409, "offline", f"stream {record.id!r} has no show on")
    if name != MAIN_INPUT:
        known = {n.name for n in await request.app[STORE_KEY].list_inputs(record.id)}
        if name not in known:
            raise ApiError(404, "not_found", f"stream {record.id!r} has no input {name[:64]!r}")
    try:
        done = await request.app[PIPELINES_KEY].switch(record.id, name)
    except SwitchFailed as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise ApiError(exc.status, exc.code, exc.message, headers) from None
    return web.json_response(
        {
            "id": record.id,
            "active_input": done.input,
            "switched": done.switched,
            # The new input's first frame: its time on the show's timeline and its date.
            "time": float(done.time) if done.time is not None else None,
            "program_date_time": (
                format_pdt(done.program_date_time) if done.program_date_time else None
            ),
        }
    )


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
    # The edge's row in the node table: every origin of the cluster sums the same viewers.
    edge = NodeRecord(edge_id, "edge", "", "", 0.0, 0.0, counts, time.time())
    try:
        await request.app[STORE_KEY].heartbeat_node(edge)
    except StoreError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
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


def switch_forward_timeout(continuity: ContinuitySection) -> float:
    """How long a forwarded switch waits for the owner's answer: its wait for the input's
    keyframe (``switch_timeout``) plus the ordinary bound for the rest of its work."""
    return continuity.switch_timeout + FORWARD_TIMEOUT


def at_owner(handler: Handler, read: bool = False, timeout: float = FORWARD_TIMEOUT) -> Handler:
    """``handler`` runs on the origin that owns the stream ``{id}`` (the one with its publisher,
    pipeline and tag timeline); any other origin forwards the request there and returns the
    owner's answer as it is. A ``read`` the owner cannot answer is answered here instead.

    Why HTTP forwarding rather than LISTEN/NOTIFY: the caller's answer must be the owner's (a
    201 only once the owner has stored and stamped the tag, its 409/422 refusals verbatim),
    which a notification cannot carry back without a reply channel of its own; the owner
    checks the caller's own Authorization; and it is bounded by one timeout. Loops are cut:
    a forwarded request is answered where it lands, even if the owner has moved since.
    ``timeout`` bounds the owner's answer (longer for a route that waits on the owner).
    """

    async def owner(request: web.Request) -> str | None:
        owners = request.app.get(OWNERS_KEY)
        stream_id = request.match_info["id"]
        if owners is None or owners.holds(stream_id):
            return None
        return await owners.owner_url(stream_id, max_age=0.0)  # fresh: acted on once

    return _forwarded(handler, owner, read, timeout)


def at_home(handler: Handler, read: bool = False) -> Handler:
    """``handler`` runs on the node whose recordings store alone holds the recording ``{rid}``
    (a file store): its media are read, cut or deleted there (see :func:`at_owner`)."""

    async def home(request: web.Request) -> str | None:
        homes = request.app.get(HOMES_KEY)
        if homes is None:
            return None
        try:
            return await homes.home_url(request.match_info["rid"])
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", str(exc), RETRY_AFTER) from exc

    return _forwarded(handler, home, read)


def _forwarded(
    handler: Handler,
    where: Callable[[web.Request], Awaitable[str | None]],
    read: bool,
    timeout: float = FORWARD_TIMEOUT,
) -> Handler:
    """``handler`` here, or the answer of the node ``where`` names (None: here)."""

    async def forwarding(request: web.Request) -> web.StreamResponse:
        if FORWARDED_HEADER in request.headers:
            return await handler(request)
        base = await where(request)
        if base is None:
            return await handler(request)
        try:
            return await _forward(request, base, timeout)
        except ApiError:
            if read:  # what this node knows (from the shared store) beats no answer
                return await handler(request)
            raise

    return forwarding


class ForwardSession:
    """The HTTP client for calls forwarded to owners, opened on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _forward(request: web.Request, base: str, timeout: float) -> web.Response:
    """The owner's answer to ``request`` (same method, path, body and Authorization)."""
    session = request.app[FORWARD_SESSION_KEY].get()
    body = await request.read()
    headers = {FORWARDED_HEADER: origin_url(request, "")}  # who sent it on, for the logs
    for name in ("Authorization", "Content-Type"):
        if name in request.headers:
            headers[name] = request.headers[name]
    url = base + request.path_qs
    try:
        async with session.request(
            request.method,
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            answer = await resp.read()
            kept = {k: resp.headers[k] for k in _FORWARD_KEPT if k in resp.headers}
            return web.Response(status=resp.status, body=answer, headers=kept)
    except aiohttp.ClientConnectorError as exc:
        # Not sent: nothing was applied; the lease moves within node_timeout if it is dead.
        log.warning("owner %s of %s unreachable: %s", base, request.path, exc)
        raise ApiError(
            503,
            "owner_unreachable",
            f"the stream's origin {base} cannot be reached: {exc}",
            RETRY_AFTER,
        ) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise ApiError(
            504,
            "owner_timeout",
            f"the stream's origin {base} did not answer within {timeout:g} s; the "
            "request may have been applied there (tags: see GET …/tags)",
        ) from exc


async def _close_forward_session(app: web.Application) -> None:
    await app[FORWARD_SESSION_KEY].close()


def make_app(
    store: Store,
    streams: LiveStreams,
    tokens: Sequence[str],
    tags: TagService,
    pipelines: Pipelines,
    urls: UrlMaker,
    playback: tuple[str, int] = ("", 3600),
    recordings: Recordings | None = None,
    registry: NodeRegistry | None = None,
) -> web.Application:
    """The origin's aiohttp application with the control API mounted."""
    app = web.Application(middlewares=[api_auth], client_max_size=64 * 1024)
    app[STORE_KEY] = store
    app[STREAMS_KEY] = streams
    app[TOKENS_KEY] = tuple(tokens)
    app[TAGS_KEY] = tags
    app[PIPELINES_KEY] = pipelines
    app[URLS_KEY] = urls
    app[REGISTRY_KEY] = registry or NodeRegistry(store, ClusterSection())
    app[PLAYBACK_KEY] = playback
    app[FORWARD_SESSION_KEY] = ForwardSession()
    app.on_cleanup.append(_close_forward_session)
    if recordings is not None:
        app[RECORDINGS_KEY] = recordings
        app.router.add_patch("/api/v1/streams/{id}", update_stream)
        app.router.add_get("/api/v1/streams/{id}/recordings", list_recordings)
        # What reads or changes a recording's media runs where they are (file store).
        app.router.add_get("/api/v1/recordings/{rid}", at_home(get_recording, read=True))
        app.router.add_delete("/api/v1/recordings/{rid}", at_home(delete_recording))
        app.router.add_post("/api/v1/recordings/{rid}/clips", at_home(create_clip))
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/streams", create_stream)
    app.router.add_get("/api/v1/streams", list_streams)
    # The owner's status has the live ingest and renditions; anyone's has the rest.
    app.router.add_get("/api/v1/streams/{id}", at_owner(get_stream, read=True))
    # What acts on a live show runs on its owner (the key lives in the shared store).
    app.router.add_delete("/api/v1/streams/{id}", at_owner(delete_stream))
    app.router.add_post("/api/v1/streams/{id}/key", rotate_key)
    app.router.add_delete("/api/v1/streams/{id}/publisher", at_owner(kick_publisher))
    app.router.add_post("/api/v1/streams/{id}/end", at_owner(end_show))
    app.router.add_patch("/api/v1/streams/{id}/vertical", at_owner(set_vertical))
    app.router.add_post("/api/v1/streams/{id}/inputs", at_owner(create_input))
    app.router.add_get("/api/v1/streams/{id}/inputs", at_owner(list_inputs, read=True))
    app.router.add_delete("/api/v1/streams/{id}/inputs/{name}", at_owner(delete_input))
    app.router.add_post(
        "/api/v1/streams/{id}/switch",
        at_owner(switch_input, timeout=switch_forward_timeout(pipelines.continuity)),
    )
    app.router.add_post("/api/v1/streams/{id}/playback-token", playback_token)
    app.router.add_post("/api/v1/streams/{id}/tags", at_owner(create_tag))
    app.router.add_get("/api/v1/streams/{id}/tags", list_tags)
    app.router.add_get("/api/v1/streams/{id}/ingest", ingest_for)
    app.router.add_get("/api/v1/nodes", list_nodes)
    app.router.add_post("/api/v1/edge-reports", edge_report)
    app.router.add_post("/beacon/{stream_id}/tags/{tag_id}/click", click_beacon)
    return app
