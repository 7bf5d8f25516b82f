"""AMF0 decode and encode speed on the messages a publish carries (pure Python; no Cython twin).

``connect`` and ``@setDataFrame onMetaData`` as OBS 30 sends them (decoded by the server), and
the server's ``_result`` + ``onStatus`` replies (encoded). AMF0 runs a few times per connection,
never per frame, so these are absolute figures with no twin to compare against; the ratio column
stays empty on purpose. Only correctness (round trip) is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.rtmp import amf0

CONNECT = (
    "connect",
    1.0,
    {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
        "swfUrl": "rtmp://origin.example:1935/live",
        "tcUrl": "rtmp://origin.example:1935/live",
    },
)
METADATA = (
    "@setDataFrame",
    "onMetaData",
    amf0.ECMAArray(
        {
            "duration": 0.0,
            "fileSize": 0.0,
            "width": 1080.0,
            "height": 1920.0,
            "videocodecid": 7.0,
            "videodatarate": 6000.0,
            "framerate": 30.0,
            "audiocodecid": 10.0,
            "audiodatarate": 160.0,
            "audiosamplerate": 48000.0,
            "audiosamplesize": 16.0,
            "audiochannels": 2.0,
            "stereo": True,
            "2.1": False,
            "3.1": False,
            "4.0": False,
            "4.1": False,
            "5.1": False,
            "7.1": False,
            "encoder": "obs-output module (libobs version 30.1.2)",
        }
    ),
)
RESULT = (
    "_result",
    1.0,
    {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
    {
        "level": "status",
        "code": "NetConnection.Connect.Success",
        "description": "Connection succeeded.",
        "objectEncoding": 0.0,
    },
)
ON_STATUS = (
    "onStatus",
    0.0,
    None,
    {"level": "status", "code": "NetStream.Publish.Start", "description": "Publishing live."},
)
MESSAGES = {"connect": CONNECT, "onMetaData": METADATA, "_result": RESULT, "onStatus": ON_STATUS}


def _summary(benchmark: Any, name: str, size: int, what: str) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        message=name,
        bytes=size,
        ops_per_s=round(1 / median),
        us_per_op=round(median * 1e6, 2),
        summary={
            "ratio": None,
            "reference": "no twin (pure Python only; AMF0 runs per connection, not per frame)",
            "value": f"{what} {name} ({size} B): {1 / median:,.0f}/s, {median * 1e6:.1f} µs",
        },
    )


@pytest.mark.parametrize("name", ["connect", "onMetaData"])
def test_amf0_decode(benchmark: Any, name: str) -> None:
    data = amf0.encode(*MESSAGES[name])
    values = benchmark(amf0.decode_all, data)
    assert values == list(MESSAGES[name])
    _summary(benchmark, name, len(data), "decode")


@pytest.mark.parametrize("name", ["_result", "onStatus"])
def test_amf0_encode(benchmark: Any, name: str) -> None:
    data = benchmark(amf0.encode, *MESSAGES[name])
    assert amf0.decode_all(data) == list(MESSAGES[name])
    _summary(benchmark, name, len(data), "encode")
