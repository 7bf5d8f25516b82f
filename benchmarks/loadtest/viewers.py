"""LL-HLS viewers as hls.js runs them in low-latency mode, and the tag watchers (viewers that
note when each DATERANGE shows up)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from urllib.parse import urljoin

from benchmarks.loadtest.accounting import RequestLog, Second, TagRecord
from benchmarks.loadtest.options import LoadTestOptions
from packager.playlist import MediaPlaylistView, parse_media_playlist, parse_variants

TAG_GRACE = 3.0  # seconds after the run for the last tags to show up


class LowLatencyViewers:
    """The viewer side of a :class:`~benchmarks.loadtest.run.LoadTest` (its state lives there)."""

    o: LoadTestOptions
    log: RequestLog
    deadline: float
    delivery: list[float]  # part listed (reload returned) → part bytes received
    playlist_wait: list[float]  # blocking reload held
    report_lag: list[int]  # sibling rendition report behind ours, in parts
    viewers_active: int
    tags: dict[str, TagRecord]
    seen_tags: dict[str, dict[str, float]]

    def _second(self) -> Second:
        raise NotImplementedError

    def _pick(self, variants: list[tuple[str, int]]) -> str:
        choice = self.o.rendition
        if choice == "lowest":
            return min(variants, key=lambda v: v[1])[0]
        if choice == "highest":
            return max(variants, key=lambda v: v[1])[0]
        if choice != "first":
            named = [uri for uri, _ in variants if choice in uri]
            if named:
                return named[0]
        return variants[0][0]

    async def _open(self, kind: str, stream: str) -> tuple[str, MediaPlaylistView] | None:
        """Multivariant → the chosen rendition's playlist URL and first view."""
        master = f"{self.o.target}/hls/{stream}/master.m3u8"
        for _ in range(20):
            if time.monotonic() >= self.deadline:
                return None
            got = await self.log.request(f"{kind}_master", "GET", master)
            variants = parse_variants(got[1].decode()) if got else []
            if variants:
                url = urljoin(master, self._pick(variants))
                got = await self.log.request(f"{kind}_playlist", "GET", url)
                if got is not None:
                    return url, parse_media_playlist(got[1].decode())
            self._second().errors += 1
            await asyncio.sleep(0.5)
        return None

    async def viewer(self, index: int, stream: str) -> None:
        """An hls.js-like low-latency viewer: blocking reload, then the parts it lists."""
        opened = await self._open("viewer", stream)
        if opened is None:
            return
        url, view = opened
        self.viewers_active += 1
        try:
            # Start at the live edge: the newest part is fetched, older ones are not.
            last = view.parts[-2][:2] if len(view.parts) >= 2 else None
            cap = int(self.o.duration * 50) + 100  # ≥ 10× the reloads 1/3 s parts need
            for _ in range(cap):
                new = [p for p in view.parts if last is None or p[:2] > last]
                listed = time.monotonic()
                for msn, idx, uri in new:
                    if time.monotonic() >= self.deadline:
                        return
                    got = await self.log.request("part", "GET", urljoin(url, uri))
                    sec = self._second()
                    if got is None:
                        sec.errors += 1
                        continue
                    self.delivery.append(time.monotonic() - listed)
                    sec.parts += 1
                    sec.part_bytes += len(got[1])
                    last = (msn, idx)
                if view.ended or time.monotonic() >= self.deadline:
                    return
                view = await self._reload("reload", url, view, self.playlist_wait, view.can_skip)
                self._note_reports(view)
        finally:
            self.viewers_active -= 1

    async def _reload(
        self,
        kind: str,
        url: str,
        view: MediaPlaylistView,
        waits: list[float] | None,
        skip: bool = False,
    ) -> MediaPlaylistView:
        """The blocking reload for the hinted part (S 6.2.5.2); a plain reload after a failure."""
        if view.hint is None:
            got = await self.log.request(kind, "GET", url)
        else:
            msn, part = view.hint
            start = time.monotonic()
            query = f"_HLS_msn={msn}&_HLS_part={part}"
            if skip:  # hls.js asks for a delta update when the playlist offers CAN-SKIP-UNTIL
                query += "&_HLS_skip=YES"
            got = await self.log.request(kind, "GET", f"{url}?{query}")
            if got is not None and waits is not None:
                waits.append(time.monotonic() - start)
        sec = self._second()
        if got is None:
            sec.errors += 1
            await asyncio.sleep(min(0.5, max(view.part_target, 0.1)))
            return dataclasses.replace(view, hint=None)  # retry with a plain reload
        sec.reloads += 1
        return parse_media_playlist(got[1].decode())

    def _note_reports(self, view: MediaPlaylistView) -> None:
        if view.last is None or not view.reports:
            return
        per_segment = max(1, round(2.0 / view.part_target)) if view.part_target else 6
        msn, part = view.last
        for _, r_msn, r_part in view.reports:
            self.report_lag.append((msn - r_msn) * per_segment + part - r_part)

    # -- tags ---------------------------------------------------------------------------
    async def watcher(self, stream: str) -> None:
        """Holds blocking reloads on one rendition and notes when each DATERANGE ID shows up."""
        opened = await self._open("watcher", stream)
        if opened is None:
            return
        url, view = opened
        seen = self.seen_tags[stream]
        end = self.deadline + TAG_GRACE
        for _ in range(int((self.o.duration + TAG_GRACE) * 50) + 100):
            now = time.monotonic()
            for tag_id in view.dateranges:
                seen.setdefault(tag_id, now)
            pending = [t for i, t in self.tags.items() if t.stream == stream and i not in seen]
            if now >= end or view.ended or (now >= self.deadline and not pending):
                return
            view = await self._reload("watcher_reload", url, view, None)
