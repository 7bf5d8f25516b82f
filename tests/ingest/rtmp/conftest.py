"""Shared fixtures for the RTMP core tests."""

from __future__ import annotations

import contextlib
import types
from collections.abc import AsyncIterator
from unittest import mock

import pytest

from ingest.rtmp import connection, flv, tags
from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader
from ingest.rtmp.server import RTMPServer, RTMPServerSettings
from ingest.sessions import LiveStreams

try:
    from native.chunk_reader import ChunkStreamReader as CChunkStreamReader
except ImportError as exc:  # extension not built: the c-reader cases are skipped
    CChunkStreamReader = None
    _NATIVE_MISSING = f"native.chunk_reader not importable ({exc}); run `make native`"
else:
    _NATIVE_MISSING = ""
try:
    from native import flv_tags as c_tags
except ImportError as exc:  # extension not built: the c-tags cases are skipped
    c_tags = None
    _TAGS_MISSING = f"native.flv_tags not importable ({exc}); run `make native`"
else:
    _TAGS_MISSING = ""
#: The FLV tag body parsers of the pure-Python reference, as the native module offers them.
py_tags = types.SimpleNamespace(parse_video=flv.parse_video, parse_audio=flv.parse_audio)


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(PyChunkStreamReader, id="py-reader"),
        pytest.param(
            CChunkStreamReader,
            id="c-reader",
            marks=pytest.mark.skipif(CChunkStreamReader is None, reason=_NATIVE_MISSING),
        ),
    ],
)
def chunk_reader_cls(request: pytest.FixtureRequest) -> type[PyChunkStreamReader]:
    """Each chunk stream reader implementation: the pure-Python reference and the Cython twin."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(py_tags, id="py-tags"),
        pytest.param(
            c_tags,
            id="c-tags",
            marks=pytest.mark.skipif(c_tags is None, reason=_TAGS_MISSING),
        ),
    ],
)
def tag_parsers(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """Each FLV tag body parser pair (``parse_video``, ``parse_audio``): the reference and the
    Cython twin."""
    return request.param  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def serving(
    reader_cls: type, settings: RTMPServerSettings | None = None
) -> AsyncIterator[RTMPServer]:
    """The asyncio RTMP server on a loopback port, with ``reader_cls`` as its chunk reader;
    the key ``good-key`` publishes stream ``demo``."""

    async def keys(key: str) -> str | None:
        return "demo" if key == "good-key" else None

    # The pure-Python reader runs with the pure-Python tag parsers, the twin with the twin.
    parsers = py_tags if reader_cls is PyChunkStreamReader else (c_tags or py_tags)
    with (
        mock.patch.object(connection, "ChunkStreamReader", reader_cls),
        mock.patch.object(tags, "parse_video", parsers.parse_video),
        mock.patch.object(tags, "parse_audio", parsers.parse_audio),
    ):
        rtmp = RTMPServer(LiveStreams(keys), settings or RTMPServerSettings())
        await rtmp.start("127.0.0.1", 0)
        try:
            yield rtmp
        finally:
            await rtmp.close()


@pytest.fixture
async def server(chunk_reader_cls: type) -> AsyncIterator[RTMPServer]:
    async with serving(chunk_reader_cls) as rtmp:
        yield rtmp
