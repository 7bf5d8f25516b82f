import json
import logging

from shopcast.logs import JsonFormatter


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
