"""HTTP control API (``/api/v1``): bearer-token auth, JSON errors, stream status."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from ingest.sessions import LiveStreams, PublishSession
from shopcast.store import Store, StreamRecord
from shopcast.tags import TagError, TagService, tag_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORE_KEY = web.AppKey("store", Store)
STREAMS_KEY = web.AppKey("streams", LiveStreams)
TOKENS_KEY: web.AppKey[tuple[str, ...]] = web.AppKey("tokens")
TAGS_KEY = web.AppKey("tags", TagService)


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
    if request.path.startswith("/api/"):
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
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
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


async def list_streams(request: web.Request) -> web.Response:
    store, streams = request.app[STORE_KEY], request.app[STREAMS_KEY]
    return web.json_response(
        {"streams": [stream_status(rec, streams) for rec in store.list_streams()]}
    )


async def get_stream(request: web.Request) -> web.Response:
    record = request.app[STORE_KEY].get_stream(request.match_info["id"])
    if record is None:
        return json_error(404, "not_found", f"stream {request.match_info['id']!r} does not exist")
    return web.json_response(stream_status(record, request.app[STREAMS_KEY]))


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError) as exc:  # nesting deeper than the parser's stack: 400 too
        raise TagError(400, "bad_json", f"the body is not JSON: {exc}") from exc


async def create_tag(request: web.Request) -> web.Response:
    try:
        body = await _json_body(request)
        rec = request.app[TAGS_KEY].create(request.match_info["id"], body)
    except TagError as exc:
        return json_error(exc.status, exc.code, exc.message)
    return web.json_response(tag_json(rec), status=201)


async def list_tags(request: web.Request) -> web.Response:
    try:
        records = request.app[TAGS_KEY].list(request.match_info["id"])
    except TagError as exc:
        return json_error(exc.status, exc.code, exc.message)
    return web.json_response({"tags": [tag_json(r) for r in records]})


async def click_beacon(request: web.Request) -> web.Response:
    """A viewer pressed "buy" on a tag's card (public: the shop page calls it)."""
    clicks = request.app[TAGS_KEY].click(
        request.match_info["stream_id"], request.match_info["tag_id"]
    )
    if clicks is None:
        return json_error(404, "not_found", "no such tag")
    return web.json_response({"clicks": clicks}, headers={"Access-Control-Allow-Origin": "*"})


def make_app(
    store: Store, streams: LiveStreams, tokens: Sequence[str], tags: TagService
) -> web.Application:
    """The origin's aiohttp application."""
    app = web.Application(middlewares=[api_auth], client_max_size=64 * 1024)
    app[STORE_KEY] = store
    app[STREAMS_KEY] = streams
    app[TOKENS_KEY] = tuple(tokens)
    app[TAGS_KEY] = tags
    app.router.add_get("/api/v1/streams", list_streams)
    app.router.add_get("/api/v1/streams/{id}", get_stream)
    app.router.add_post("/api/v1/streams/{id}/tags", create_tag)
    app.router.add_get("/api/v1/streams/{id}/tags", list_tags)
    app.router.add_post("/beacon/{stream_id}/tags/{tag_id}/click", click_beacon)
    return app
