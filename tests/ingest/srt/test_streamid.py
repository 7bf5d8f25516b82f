"""SRT stream ids: the accepted forms, and refusals that quote at most a short cut."""

from __future__ import annotations

import pytest

from ingest.shown import SHOWN
from ingest.srt.streamid import MAX_STREAM_ID, PublishRequest, StreamIdError, parse_stream_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"#!::r=demo,m=publish,k=abc", PublishRequest("abc", "demo")),
        (b"#!::k=abc,m=publish", PublishRequest("abc")),
        (b"#!::k=abc", PublishRequest("abc")),  # only publishing is served: m defaults to it
        (b"#!::r=demo,m=publish,k=abc,u=seller", PublishRequest("abc", "demo")),
        (b"publish:abc", PublishRequest("abc")),
        (b"abc-DEF_123", PublishRequest("abc-DEF_123")),
        (b"%23%21%3A%3Ar%3Ddemo%2Cm%3Dpublish%2Ck%3Dabc", PublishRequest("abc", "demo")),
        (b"publish%3Aabc", PublishRequest("abc")),
    ],
)
def test_accepted_forms(raw: bytes, expected: PublishRequest) -> None:
    assert parse_stream_id(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "no stream id"),
        (b"x" * (MAX_STREAM_ID + 1), "longer than 512 bytes"),
        (b"\xff\xfe", "not UTF-8"),
        (b"publish:\x07abc", "control characters"),
        (b"#!::r=demo,m=request,k=abc", "mode 'request' is not served"),
        (b"#!::r=demo,m=publish", "no k=<stream key>"),
        (b"#!::r=demo,k=a,k=b", "repeats 'k'"),
        (b"#!::r=,k=a", "empty r="),
        (b"#!::garbage", "is not key=value"),
        (b"publish:", "empty stream key"),
        (b"play:abc", "unrecognised stream id 'play:abc'"),
    ],
)
def test_refusals(raw: bytes, message: str) -> None:
    with pytest.raises(StreamIdError, match=message):
        parse_stream_id(raw)


def test_attacker_strings_are_cut_short() -> None:
    with pytest.raises(StreamIdError) as info:
        parse_stream_id(b"#!::m=" + b"A" * 400 + b",k=x")
    assert len(str(info.value)) < SHOWN + 60
    assert "A" * (SHOWN - 1) + "…" in str(info.value)
    assert "A" * SHOWN not in str(info.value)
