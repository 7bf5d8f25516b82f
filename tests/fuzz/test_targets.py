"""The fuzz targets in ``make test``: each runs its seed corpus, and every input a fuzz run found
(kept under ``regressions/<target>/``) now gets the clear refusal instead of the crash."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import REGRESSIONS, TARGETS, CChunkStreamReader, Target

FINDINGS = sorted(REGRESSIONS.glob("*/*"))


def _target(name: str) -> Target:
    target = TARGETS[name]
    if target.needs_native and CChunkStreamReader is None:
        pytest.skip("native.chunk_reader not built (make native)")
    return target


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_run_and_are_not_refusals_only(name: str) -> None:
    target = _target(name)
    outcomes = {target.run(seed[: target.max_len]) for seed in target.seeds()}
    assert outcomes and all(isinstance(o, str) for o in outcomes)


@pytest.mark.parametrize("path", FINDINGS, ids=[f"{p.parent.name}/{p.name}" for p in FINDINGS])
def test_kept_finding_is_refused_cleanly(path: object) -> None:
    from pathlib import Path

    assert isinstance(path, Path)
    target = _target(path.parent.name)
    assert isinstance(target.run(path.read_bytes()), str)
