"""How much of a peer-chosen string may reach a reply, a log line or an error: defined once.

RTMP app and stream names, tcUrl, flashVer, command names, SRT stream ids, request paths and
the like are chosen by whoever connects; an AMF0 string alone may be 64 KB. Whatever quotes
one goes through :func:`cut` (bare) or :func:`shown` (quoted, control characters escaped), so
a reply or a log line stays short and one line.
"""

from __future__ import annotations

#: Characters of a peer-chosen string that reach a reply or a log line.
SHOWN = 48
#: Characters of a whole reason built around such strings (a refusal, a "disconnecting: …").
REASON_CHARS = 200
_MORE = "…"


def cut(text: str, limit: int = SHOWN) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(_MORE), 0)] + _MORE


def shown(text: str, limit: int = SHOWN) -> str:
    """``text`` cut like :func:`cut` and quoted; control characters come out escaped. At most
    ``limit`` characters between the quotes, escapes included."""
    quoted = repr(cut(text, limit))
    if len(quoted) <= limit + 2:
        return quoted
    # Escapes (``\x00``, ``\\``) make the quoted text up to 4× longer (a fuzz finding: a WHIP
    # reason of 404 characters): cut the escaped form too.
    return quoted[0] + cut(quoted[1:-1], limit) + quoted[-1]
