"""Log setup: plain lines or one JSON object per line; every line names its stream/connection."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from aiohttp.http_exceptions import HttpProcessingError

from ingest.shown import REASON_CHARS, cut

# Components prefix their lines with what they are about: "[rtmp#3 127.0.0.1:5000 stream=demo]",
# "[transcode demo]", "[demo]". JSON lines lift that context into fields.
_CONTEXT = re.compile(r"^\[(?P<context>[^\]]+)\]\s*")
_STREAM = re.compile(r"(?:stream=|transcode |^)(?P<stream>[a-z0-9][a-z0-9_-]{0,63})(?:\s|$)")
_CONN = re.compile(r"^(?P<conn>(?:rtmp|whip)#\d+)")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "context"?, "stream"?, "conn"?, "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        match = _CONTEXT.match(message)
        if match is not None:
            context = match.group("context")
            out["context"] = context
            if conn := _CONN.match(context):
                out["conn"] = conn.group("conn")
            if stream := _STREAM.search(context):
                out["stream"] = stream.group("stream")
        out["message"] = message
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class ShortParserErrors(logging.Filter):
    """aiohttp logs a request it cannot parse with the offending line in a traceback (kilobytes
    a peer chose); such a record becomes one line with the reason cut short."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {cut(str(exc), REASON_CHARS)!r}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ShortParserErrors())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
