"""The benchmark's viewer swarm (benchmarks/loadtest/swarm.py) behaves like the viewers it stands
for: through a real edge, every viewer gets every new part, complete and in order."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest

from benchmarks.harness.sim import follows
from benchmarks.loadtest import swarm
from tests.e2e.conftest import requires_ffmpeg, stop_ffmpeg
from tests.edge.conftest import edge_process, logged_origin, publish, wait_live

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
VIEWERS, SECONDS = 30, 4.0


async def test_swarm_viewers_get_every_part_complete_and_in_order(tmp_path: Path) -> None:
    async with logged_origin(tmp_path) as origin:
        publisher = await publish(origin, 30)
        try:
            playlist = await wait_live(origin.http)
            async with edge_process([origin.http]) as edge:
                proc = await asyncio.create_subprocess_exec(
                    *swarm.command(edge, playlist, VIEWERS, seconds=SECONDS, join=0.5),
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await proc.communicate()
            assert proc.returncode == 0
            run = json.loads(out)
            sizes = origin.log.part_sizes()
        finally:
            await stop_ffmpeg(publisher)
    assert run["error_count"] == 0, run["errors"]
    directory = playlist.rsplit("/", 1)[0]
    by_viewer: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for viewer, msn, index, size, _at in run["parts"]:
        assert size == sizes[f"{directory}/{msn}.{index}.m4s"], (viewer, msn, index)
        by_viewer[viewer].append((msn, index))
    assert sorted(by_viewer) == list(range(VIEWERS))
    for viewer, got in by_viewer.items():
        # ~3 parts a second once joined (a join takes up to a target duration).
        assert len(got) >= (SECONDS - 2) * 3, (viewer, got)
        assert all(follows(a, b) for a, b in itertools.pairwise(got)), (viewer, got)
    assert run["lateness"] and run["cpu"] > 0  # the figures the benchmark reads exist
