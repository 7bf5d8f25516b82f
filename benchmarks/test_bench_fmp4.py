"""fMP4 fragment writing speed of the Cython twin against the pure-Python reference.

Two parts as the segmenter cuts them: ``typical`` (a 1/3 s LL-HLS part: 10 H.264 samples of about
8 KB and 16 AAC samples of about 400 B, two tracks) and ``small-samples`` (60 samples of 200 B,
one track, where per-sample work dominates). Figures go to ``extra_info`` and a table at the end of
the run; only correctness is asserted.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from packager.fmp4 import Sample, TrackRun, fragment_py

try:
    from native.fmp4_writer import fragment as fragment_c
except ImportError:
    fragment_c = None

WRITERS = [
    pytest.param(fragment_py, id="py-writer"),
    pytest.param(
        fragment_c,
        id="c-writer",
        marks=pytest.mark.skipif(fragment_c is None, reason="native twin not built"),
    ),
]


def make_parts() -> dict[str, list[TrackRun]]:
    rng = random.Random(7)
    video = [
        Sample(3000, rng.randbytes(rng.randint(7000, 9000) * (3 if i == 0 else 1)), i == 0, 3000)
        for i in range(10)
    ]
    audio = [Sample(1920, rng.randbytes(rng.randint(350, 450)), True) for _ in range(16)]
    small = [Sample(1500, rng.randbytes(200), i % 30 == 0, 0) for i in range(60)]
    return {
        "typical": [TrackRun(1, 90_000 * 3600, video), TrackRun(2, 48_000 * 3600, audio)],
        "small-samples": [TrackRun(1, 90_000 * 3600, small)],
    }


PARTS = make_parts()
Results = dict[tuple[str, str], dict[str, Any]]  # (part, writer) -> extra_info


class ResultsTable:
    """Collects the figures and prints them as one table at the end of the run."""

    def __init__(self) -> None:
        self.results: Results = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        tr = terminalreporter
        tr.section("fMP4 fragment writer (median round; MB = 10^6 bytes)")
        columns = ("part", "bytes", "py frag/s", "c frag/s", "py MB/s", "c MB/s", "c/py")
        tr.write_line(f"{columns[0]:<15}" + "".join(f"{c:>11}" for c in columns[1:]))
        for part in PARTS:
            py, c = self.results.get((part, "py-writer")), self.results.get((part, "c-writer"))
            if not (py or c):
                continue
            row = [str((py or c or {})["bytes"])]
            row += [f"{r['fragments_per_s']:.0f}" if r else "-" for r in (py, c)]
            row += [f"{r['mb_per_s']:.0f}" if r else "-" for r in (py, c)]
            row.append(f"{c['fragments_per_s'] / py['fragments_per_s']:.1f}x" if py and c else "-")
            tr.write_line(f"{part:<15}" + "".join(f"{cell:>11}" for cell in row))


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> Results:
    table = ResultsTable()
    request.config.pluginmanager.register(table, "shopcast-fmp4-bench-table")
    return table.results


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("writer", WRITERS)
def test_fragment_throughput(benchmark: Any, results: Results, writer: Any, part: str) -> None:
    runs = PARTS[part]
    expected = fragment_py(1234, runs)
    data = benchmark(writer, 1234, runs)
    assert data == expected

    name = "c-writer" if writer is fragment_c else "py-writer"
    median = benchmark.stats.stats.median
    info: dict[str, Any] = {
        "part": part,
        "bytes": len(data),
        "samples": sum(len(r.samples) for r in runs),
        "fragments_per_s": round(1 / median),
        "mb_per_s": round(len(data) / median / 1e6, 1),
    }
    py = results.get((part, "py-writer"))
    if name == "c-writer" and py:
        info["speedup_vs_py"] = round(info["fragments_per_s"] / py["fragments_per_s"], 1)
    benchmark.extra_info.update(info)
    results[(part, name)] = info
