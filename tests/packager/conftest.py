from __future__ import annotations

from fractions import Fraction

import pytest

from benchmarks.harness.disks import tiny_disk  # noqa: F401  (fixture: a 256 kB tmpfs)
from benchmarks.harness.s3_server import s3_server  # noqa: F401  (fixture: a real S3 server on loopback)
from packager.live import LivePackage, PackagerConfig
from transcode.output import EncodedPacket, RenditionInfo

from .media import encode_audio, encode_video

SECONDS = 16


@pytest.fixture(scope="session")
def media() -> dict[str, tuple[RenditionInfo, list[EncodedPacket]]]:
    """Two aligned video rungs and one audio track, 16 s, encoded once per test session."""
    return {
        "270p": encode_video("270p", SECONDS, 270, 480),
        "180p": encode_video("180p", SECONDS, 180, 320),
        "audio": encode_audio("audio", SECONDS),
    }


class Feeder:
    """Plays encoded packets into a package in timestamp order, like a live transcoder."""

    def __init__(self, package: LivePackage, media: dict) -> None:
        self.package = package
        for info, _ in media.values():
            package.on_rendition(info)
        package.on_ladder([info for info, _ in media.values()])
        events = []
        for info, packets in media.values():
            for p in packets:
                events.append((Fraction(p.dts, info.timescale), info.kind.value, p))
        events.sort(key=lambda e: (e[0], e[1]))
        self.events = events
        self.pos = 0

    def until(self, seconds: float) -> None:
        while self.pos < len(self.events) and self.events[self.pos][0] < seconds:
            self.package.on_packet(self.events[self.pos][2])
            self.pos += 1

    def finish(self) -> None:
        self.until(1e9)
        self.package.on_end()


@pytest.fixture
def make_package(media):
    def make(config: PackagerConfig | None = None, names=("270p", "180p", "audio")) -> Feeder:
        package = LivePackage("shop", config or PackagerConfig())
        return Feeder(package, {n: media[n] for n in names})

    return make
