"""Timed-metadata building: a product tag's ID3v2.4 TXXX (``Tag.id3``) wrapped in a version-1
``emsg`` box (``Emsg.to_bytes``), as the packager puts it into the next part of every rendition.

Pure Python, no Cython twin. The ratio is the cost of one tag's ID3 + emsg against writing the
fMP4 part it rides in (the ``typical`` part of the fMP4 benchmark, pure-Python writer, timed in
the same test): the overhead a tag adds to the part that carries it.
"""

from __future__ import annotations

import timeit
from fractions import Fraction
from typing import Any

from benchmarks.test_bench_fmp4 import PARTS
from packager.fmp4 import Emsg, fragment_py
from packager.tags import Tag

TAG = Tag(
    "01JD3K6W8ZQ4X0C9V7B2N5M1PA",
    "product",
    Fraction(754, 3),
    1_790_000_251.333,
    {
        "title": "Linen shirt, sand",
        "price": "49.00",
        "currency": "EUR",
        "image": "https://cdn.example/p/4411.jpg",
    },
    product_id="sku-4411",
)


def id3_emsg(tag: Tag) -> bytes:
    return Emsg(90_000, 22_620_000, 17, tag.id3()).to_bytes()


def best_per_call(fn: Any, *args: Any, number: int = 200, repeat: int = 5) -> float:
    return min(timeit.repeat(lambda: fn(*args), number=number, repeat=repeat)) / number


def test_id3_emsg(benchmark: Any) -> None:
    box = benchmark(id3_emsg, TAG)
    assert box[4:8] == b"emsg" and b"ID3\x04" in box and b"TXXX" in box
    median = benchmark.stats.stats.median
    part = best_per_call(fragment_py, 1234, PARTS["typical"])
    ratio = median / part
    benchmark.extra_info.update(
        bytes=len(box),
        ops_per_s=round(1 / median),
        us_per_tag=round(median * 1e6, 2),
        part_write_us=round(part * 1e6, 1),
        summary={
            "ratio": ratio,
            "reference": "writing the typical 1/3 s fMP4 part it rides in (pure Python, same "
            "run); no twin",
            "value": f"{1 / median:,.0f} tags/s ({median * 1e6:.1f} µs, {len(box)} B box) "
            f"vs {part * 1e6:.0f} µs per part",
        },
    )
