"""The chunk stream reader in use: the compiled twin, unless absent or SHOPCAST_NO_EXTENSIONS=1."""

from __future__ import annotations

import os

from ingest.rtmp.chunk_py import ChunkMessage, ChunkWriter
from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader

ChunkStreamReader: type[PyChunkStreamReader] = PyChunkStreamReader
NATIVE = False
if not os.environ.get("SHOPCAST_NO_EXTENSIONS"):
    try:
        from native.chunk_reader import ChunkStreamReader as _NativeReader
    except ImportError:
        pass
    else:
        ChunkStreamReader = _NativeReader
        NATIVE = True

__all__ = ["NATIVE", "ChunkMessage", "ChunkStreamReader", "ChunkWriter", "PyChunkStreamReader"]
