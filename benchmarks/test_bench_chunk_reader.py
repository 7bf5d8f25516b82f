"""Chunk stream parsing throughput of the Cython twin against the pure-Python reference.

Input arrives as 64 KiB socket reads; each read is fed, then every complete message is drained.
The numbers go to ``extra_info`` and a table at the end of the run; only correctness is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader

try:
    from native.chunk_reader import ChunkStreamReader as CChunkStreamReader
except ImportError:
    CChunkStreamReader = None

READ_SIZE = 1 << 16
READERS = [
    pytest.param(PyChunkStreamReader, id="py-reader"),
    pytest.param(
        CChunkStreamReader,
        id="c-reader",
        marks=pytest.mark.skipif(CChunkStreamReader is None, reason="native twin not built"),
    ),
]


def parse(reader_cls: Any, reads: list[bytes]) -> tuple[int, int]:
    """Feed every read and drain the reader; return (messages, payload bytes)."""
    reader = reader_cls()
    messages = size = 0
    for data in reads:
        reader.feed(data)
        while (msg := reader.next_message()) is not None:
            messages += 1
            size += len(msg.payload)
    return messages, size


@pytest.mark.parametrize("reader_cls", READERS)
@pytest.mark.parametrize("input_name", ["publish", "publish-chunk128"])
def test_chunk_reader_throughput(
    benchmark: Any,
    publish_inputs: dict[str, Any],
    throughput: dict[tuple[str, str], dict[str, Any]],
    input_name: str,
    reader_cls: Any,
) -> None:
    publish = publish_inputs[input_name]
    reads = [publish.data[i : i + READ_SIZE] for i in range(0, len(publish.data), READ_SIZE)]
    expected = parse(PyChunkStreamReader, reads)
    assert expected[0] > 0
    result = benchmark(parse, reader_cls, reads)
    assert result == expected  # same number of messages and payload bytes from both readers

    name = "c-reader" if reader_cls is CChunkStreamReader else "py-reader"
    rate = len(publish.data) / benchmark.stats.stats.median / 1e6
    info = {"input": publish.source, "bytes": len(publish.data), "messages": result[0]}
    info["mb_per_s"] = round(rate, 1)
    py = throughput.get((input_name, "py-reader"))
    if name == "c-reader" and py:
        info["speedup_vs_py"] = round(rate / py["mb_per_s"], 2)
    benchmark.extra_info.update(info)
    throughput[(input_name, name)] = info
