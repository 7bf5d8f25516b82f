"""LL-HLS media playlist rendering (``packager/playlist.py``), pure Python with no Cython twin.

The origin renders a media playlist for every reload (blocking reloads included, about three per
viewer per second with 1/3 s parts), so this is the per-viewer cost on the origin's loop. The
state is a live window as the packager keeps it: 10 segments of 6 parts (2 s / 1/3 s), three
rendition reports, and 0 or 20 product tags as EXT-X-DATERANGE; also the ``_HLS_skip=YES``
delta update. The ratio is each case against the ``plain`` render measured in the same run.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from packager.playlist import (
    DateRangeLine,
    MediaPlaylistState,
    Part,
    RenditionReport,
    Segment,
    part_uri,
    render_media_playlist,
    segment_uri,
)
from packager.tags import Tag

SEGMENTS, PARTS = 10, 6
PART = Fraction(1, 3)
EPOCH = 1_790_000_000.0
FIRST_MSN = 1200


def live_state() -> MediaPlaylistState:
    """10 complete segments and a newest one with 2 of its 6 parts, as in a running stream."""
    state = MediaPlaylistState(target_duration=2, part_target=PART)
    for n in range(SEGMENTS + 1):
        msn = FIRST_MSN + n
        start = Fraction(msn * 2)
        seg = Segment(msn, start, EPOCH + float(start), segment_uri(msn))
        count = PARTS if n < SEGMENTS else 2
        seg.parts = [Part(i, PART, i == 0, part_uri(msn, i)) for i in range(count)]
        seg.complete = n < SEGMENTS
        state.segments.append(seg)
    return state


def dateranges(count: int) -> list[DateRangeLine]:
    lines = []
    for i in range(count):
        at = EPOCH + FIRST_MSN * 2 + i
        tag = Tag(
            f"tag-{i:04d}",
            "product",
            Fraction(i),
            at,
            {"title": f"Product {i}", "price": "19.99", "currency": "EUR", "sku": f"SKU-{i}"},
            product_id=f"sku-{i}",
        )
        lines.append(DateRangeLine(tag.id, tag.daterange, at))
    return lines


STATE = live_state()
REPORTS = [
    RenditionReport(f"../{n}/index.m3u8", FIRST_MSN + SEGMENTS, 1)
    for n in ("1080p", "720p", "540p")
]
CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "20-dateranges": {"dateranges": dateranges(20)},
    "20-dateranges-skip": {"dateranges": dateranges(20), "skip": "YES"},
}
Results = dict[str, float]  # case -> median seconds


@pytest.fixture(scope="module")
def medians() -> Results:
    return {}


@pytest.mark.parametrize("case", CASES)
def test_render_media_playlist(benchmark: Any, medians: Results, case: str) -> None:
    text = benchmark(render_media_playlist, STATE, REPORTS, **CASES[case])
    assert text.count("#EXT-X-DATERANGE:") == len(CASES[case].get("dateranges", ()))
    assert text.count("#EXT-X-RENDITION-REPORT:") == 3
    assert "#EXT-X-PRELOAD-HINT:TYPE=PART" in text
    median = benchmark.stats.stats.median
    medians[case] = median
    plain = medians.get("plain")
    ratio = median / plain if plain and case != "plain" else None
    # One core rendering nothing else serves this many viewers' reloads (3 per second each).
    viewers = 1 / median / (1 / float(PART))
    benchmark.extra_info.update(
        case=case,
        bytes=len(text.encode()),
        renders_per_s=round(1 / median),
        us_per_render=round(median * 1e6, 1),
        viewers_per_core_if_only_rendering=round(viewers),
        cost_vs_plain=round(ratio, 2) if ratio else None,
        summary={
            "ratio": ratio,
            "reference": "the plain render (no tags) in the same run; no twin",
            "value": f"{1 / median:,.0f} renders/s ({median * 1e6:.0f} µs, {len(text)} B): "
            f"≈ {viewers:,.0f} viewers/core at 3 reloads/s if rendering were all",
        },
    )
