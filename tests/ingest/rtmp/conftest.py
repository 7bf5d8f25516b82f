"""Shared fixtures for the RTMP core tests."""

from __future__ import annotations

import pytest

from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader

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
