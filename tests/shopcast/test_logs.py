import asyncio
import io
import json
import logging

from aiohttp import web

from ingest.shown import REASON_CHARS
from shopcast.logs import JsonFormatter, ShortParserErrors


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("ingest.rtmp.server", logging.INFO, __file__, 1, message, args, None)


def test_json_lines_lift_connection_and_stream() -> None:
    line = JsonFormatter().format(
        record("[%s] publishing (type=%s)", "rtmp#7 127.0.0.1:5000 stream=shoe-launch", "live")
    )
    out = json.loads(line)
    assert out["conn"] == "rtmp#7" and out["stream"] == "shoe-launch"
    assert out["level"] == "INFO" and out["logger"] == "ingest.rtmp.server"
    assert out["message"].endswith("publishing (type=live)")
    assert out["ts"].endswith("Z")


def test_transcoder_and_plain_context() -> None:
    out = json.loads(JsonFormatter().format(record("[transcode demo] source h264")))
    assert out["stream"] == "demo" and "conn" not in out
    out = json.loads(JsonFormatter().format(record("no context here")))
    assert "context" not in out and out["message"] == "no context here"


def test_exceptions_are_one_line_of_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record("failed")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


async def test_requests_aiohttp_cannot_parse_are_logged_short() -> None:
    """The origin's HTTP server, sent a 3 KB request line of control bytes."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ShortParserErrors())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("aiohttp.server")
    logger.addHandler(handler)
    runner = web.AppRunner(web.Application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"GET /" + b"\x01" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await reader.read(100_000)).split(b" ")[1] == b"400"
        writer.close()
    finally:
        await runner.cleanup()
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "Error handling request" in lines[0], lines
    assert len(lines[0]) <= REASON_CHARS + 120
