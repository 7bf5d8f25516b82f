"""Bounds on what one RTMP peer can make the server hold or parse, defined once.

The chunk stream reader and its compiled twin (``native/chunk_reader.pyx``), the connection
core's ``RTMPLimits``, the AMF0 decoder and the ``[ingest]`` config section take their defaults
from here.
"""

from __future__ import annotations

#: §5.4.1: larger Set Chunk Size values are meaningless (messages are ≤ 2^24 - 1 bytes).
MAX_CHUNK_SIZE = 0xFFFFFF
#: One reassembled message (a 4K keyframe fits).
MAX_MESSAGE_SIZE = 8 << 20
#: Unparsed bytes plus bytes of unfinished messages.
MAX_BUFFERED = 16 << 20
#: Chunk streams (csids) one connection may open.
MAX_CHUNK_STREAMS = 64
#: §5.3.1: the longest chunk header (3-byte basic, 11-byte message header, 4-byte extended
#: timestamp): what unparsed input may hold beyond ``max_buffered`` plus one chunk.
MAX_CHUNK_HEADER = 18

#: connect's ``app`` (ours is "live"): longer ones are refused before anything echoes them.
MAX_APP_NAME = 64

#: AMF0 values: nesting depth, bytes in one string, items in one container, values per message.
MAX_AMF_DEPTH = 16
MAX_AMF_STRING = 1 << 16
MAX_AMF_ITEMS = 1024
MAX_AMF_VALUES = 8192
