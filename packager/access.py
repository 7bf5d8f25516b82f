"""Signed playback URLs: an HMAC token scoped to one stream's ``/hls/<id>/`` prefix (or one
recording's ``/vod/<id>/``, which also opens its replay page's ``/replay/<id>/data.json``), with
expiry.

The origin and the edge check it with the same shared secret; playlists carry it on to every
child URI so players keep working without knowing about it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN_PARAM = "token"
_HLS_PREFIX = re.compile(r"^(/(?:hls|vod)/[^/]+/)")
#: The replay page's data is its recording's: opened by the token for ``/vod/<id>/``.
_REPLAY_DATA = re.compile(r"^/replay/([^/]+)/data\.json$")
# URI lines (no leading '#') and URI="..." attributes of a playlist.
_URI_ATTR = re.compile(r'URI="([^"?]*)"')


def _signature(secret: str, prefix: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{prefix}|{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def mint(secret: str, stream_id: str, expires: int, scope: str = "hls") -> str:
    """A token for ``/<scope>/<stream_id>/`` (scope ``hls``, or ``vod`` with a recording id)
    valid until ``expires`` (epoch seconds)."""
    return f"{expires}.{_signature(secret, f'/{scope}/{stream_id}/', expires)}"


def verify(secret: str, path: str, token: str | None, now: float) -> str | None:
    """``None`` if ``token`` opens ``path`` now, else why not (for the 403 body)."""
    if not token:
        return "a playback token is required"
    if (replay := _REPLAY_DATA.match(path)) is not None:
        path = f"/vod/{replay.group(1)}/"
    match = _HLS_PREFIX.match(path)
    expires_text, _, signature = token.partition(".")
    # isascii: str.isdigit() also holds for digits int() refuses, such as "²" (a fuzz finding).
    digits = expires_text.isascii() and expires_text.isdigit()
    if match is None or not digits or len(expires_text) > 12:
        return "malformed playback token"
    expected = _signature(secret, match.group(1), int(expires_text))
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "invalid playback token"
    if int(expires_text) < now:
        return "expired playback token"
    return None


def carry_token(playlist: str, token: str) -> str:
    """Append the token to every URI of a playlist, so child requests are authorized too."""
    query = f"?{TOKEN_PARAM}={token}"
    lines = []
    for line in playlist.split("\n"):
        if line and not line.startswith("#"):
            line += query
        elif 'URI="' in line:
            line = _URI_ATTR.sub(lambda m: f'URI="{m.group(1)}{query}"', line)
        lines.append(line)
    return "\n".join(lines)
