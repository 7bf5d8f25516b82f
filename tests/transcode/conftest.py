from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.mediakit import FFMPEG, SourceCache


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> SourceCache:
    if FFMPEG is None:
        pytest.skip("Debian ffmpeg CLI not installed")
    return SourceCache(Path(tmp_path_factory.mktemp("transcode-sources")))
