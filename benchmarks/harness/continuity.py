"""Following live media playlists the way a player does (blocking reloads), noting when each part
was listed and which discontinuity it follows: what the continuity tests and benchmark measure."""

from __future__ import annotations

import asyncio
import io
import re
import time
from dataclasses import dataclass, field

import aiohttp
import av

_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"')
_PART = re.compile(r'#EXT-X-PART:.*URI="([^"]+)"')
_MAP = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


@dataclass(frozen=True)
class ListedSegment:
    uri: str
    map_uri: str
    discontinuity: int  # absolute discontinuity number it follows


@dataclass
class PlaylistWatch:
    """One rendition's playlist followed with ``_HLS_msn``/``_HLS_part`` blocking reloads."""

    http: aiohttp.ClientSession
    url: str
    #: part URI → (wall-clock time it was first seen listed, discontinuity number it follows)
    parts: dict[str, tuple[float, int]] = field(default_factory=dict)
    text: str = ""
    ended: bool = False

    async def run(self) -> None:
        query: dict[str, str] = {}
        while not self.ended:
            try:
                async with self.http.get(self.url, params=query) as resp:
                    if resp.status != 200:
                        await asyncio.sleep(0.1)
                        query = {}
                        continue
                    text = await resp.text()
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
                continue
            seen = time.time()
            self._take(text, seen)
            hint = _HINT.search(text)
            query = {"_HLS_msn": hint.group(1), "_HLS_part": hint.group(2)} if hint else {}

    def _take(self, text: str, seen: float) -> None:
        self.text = text
        self.ended = "#EXT-X-ENDLIST" in text
        disc = 0
        for line in text.splitlines():
            if line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
                disc = int(line.split(":")[1])
            elif line == "#EXT-X-DISCONTINUITY":
                disc += 1
            elif (m := _PART.match(line)) and m.group(1) not in self.parts:
                self.parts[m.group(1)] = (seen, disc)

    def segments(self) -> list[ListedSegment]:
        """Complete segments of the newest playlist text, with their init and discontinuity."""
        out, disc, map_uri, extinf = [], 0, "", False
        for line in self.text.splitlines():
            if line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
                disc = int(line.split(":")[1])
            elif line == "#EXT-X-DISCONTINUITY":
                disc += 1
            elif m := _MAP.match(line):
                map_uri = m.group(1)
            elif line.startswith("#EXTINF"):
                extinf = True
            elif extinf and line and not line.startswith("#"):
                out.append(ListedSegment(line, map_uri, disc))
                extinf = False
        return out

    def switch_gap(self, discontinuity: int) -> float | None:
        """Seconds from listing the last part before ``discontinuity`` to the first after it."""
        before = [t for t, d in self.parts.values() if d == discontinuity - 1]
        after = [t for t, d in self.parts.values() if d == discontinuity]
        if not before or not after:
            return None
        return min(after) - max(before)

    @property
    def discontinuity(self) -> int:
        """Discontinuity number of the newest listed part (-1 before any)."""
        return max((d for _, d in self.parts.values()), default=-1)


def decode_segment(init: bytes, segment: bytes) -> tuple[list[tuple[int, int]], int]:
    """PyAV decodes init + segment: (width, height) of every video frame, audio frames."""
    sizes: list[tuple[int, int]] = []
    audio = 0
    with av.open(io.BytesIO(init + segment), mode="r", format="mp4") as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                sizes.append((frame.width, frame.height))
            else:
                audio += 1
    return sizes, audio
