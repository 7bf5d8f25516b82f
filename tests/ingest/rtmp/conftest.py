"""Shared fixtures for the RTMP core tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from unittest import mock

import pytest

from ingest.rtmp import connection
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


@contextlib.asynccontextmanager
async def serving(
    reader_cls: type, settings: RTMPServerSettings | None = None
) -> AsyncIterator[RTMPServer]:
    """The asyncio RTMP server on a loopback port, with ``reader_cls`` as its chunk reader;
    the key ``good-key`` publishes stream ``demo``."""

    async def keys(key: str) -> str | None:
        return "demo" if key == "good-key" else None

    with mock.patch.object(connection, "ChunkStreamReader", reader_cls):
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
