"""The edge's I/O-free parts: target checks, cache freshness and LRU, collapsing, viewers."""

from __future__ import annotations

import argparse
import asyncio
import re

import pytest

from cdn_edge.cache import CachedResponse, ResponseCache, freshness
from cdn_edge.cli import add_edge_parser, edge_config
from cdn_edge.collapse import Collapser
from cdn_edge.paths import BadTarget, byte_range, cache_key, parse_target, preload_hints
from cdn_edge.viewers import ViewerTracker


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("/hls/demo/master.m3u8", "/hls/demo/master.m3u8"),
        ("/hls/demo/poster.jpg?token=t", "/hls/demo/poster.jpg"),
        ("/hls/demo/tags/t18f2a9c3d1e2f3a4b.jpg", "/hls/demo/tags/t18f2a9c3d1e2f3a4b.jpg"),
        ("/vod/AAAAAAAAAAAAAAAAAAAAAA/poster.jpg", "/vod/AAAAAAAAAAAAAAAAAAAAAA/poster.jpg"),
        ("/hls/demo/180p/12.3.m4s?x=1&token=t", "/hls/demo/180p/12.3.m4s"),
        (
            "/hls/demo/180p/index.m3u8?_HLS_skip=YES&_HLS_part=2&_HLS_msn=7&utm=x",
            "/hls/demo/180p/index.m3u8?_HLS_msn=7&_HLS_part=2&_HLS_skip=YES",
        ),
        ("/demo/demo", "/demo/demo"),
        ("/static/hls.min.js", "/static/hls.min.js"),
        ("/replay/" + "R" * 22, "/replay/" + "R" * 22),
        ("/replay/" + "R" * 22 + "/data.json?token=t", "/replay/" + "R" * 22 + "/data.json"),
        ("/clips/AAAAAAAAAAAAAAAAAAAAAA.mp4?token=t&x=1", "/clips/AAAAAAAAAAAAAAAAAAAAAA.mp4"),
    ],
)
def test_targets_and_their_keys(raw: str, key: str) -> None:
    assert cache_key(parse_target(raw), token_in_key=False) == key


def test_the_token_is_part_of_the_key_only_when_the_origin_judges_it() -> None:
    target = parse_target("/hls/demo/180p/index.m3u8?token=abc")
    assert target.token == "abc"
    assert cache_key(target, token_in_key=True) == "/hls/demo/180p/index.m3u8?token=abc"
    assert cache_key(target, token_in_key=False) == "/hls/demo/180p/index.m3u8"


@pytest.mark.parametrize(
    "raw",
    [
        "/hls/demo/../x/index.m3u8",
        "/hls/demo/%2e%2e/index.m3u8",
        "/hls/demo/180p%2F1.m4s",
        "/hls/demo//1.m4s",
        "/hls/demo/180p/1.m4s/extra",
        "/hls/demo",
        "/hls/demo/poster.png",
        "/metrics/../hls/demo/master.m3u8",
        "/api/v1/streams",
        "/hls/demo/180p/index.m3u8?_HLS_msn=-1",
        "/replay/short",
        "/replay/" + "R" * 22 + "/other.json",
        "/replay/" + "R" * 22 + "/../../api/v1/streams",
        "/clips/AAAAAAAAAAAAAAAAAAAAA.mp4",  # 21 characters: not a clip id
        "/clips/AAAAAAAAAAAAAAAAAAAAAA.mp4/x",
        "/clips/AAAAAAAAAAAAAAAAAAAAAA.json",
        "/clips/../api/v1/streams",
    ],
)
def test_bad_targets(raw: str) -> None:
    with pytest.raises(BadTarget):
        parse_target(raw)


def test_replay_data_is_judged_by_its_recordings_token() -> None:
    rid = "R" * 22
    page = parse_target(f"/replay/{rid}?token=abc")
    assert (page.stream, page.token) == (None, None)  # the page itself is open
    data = parse_target(f"/replay/{rid}/data.json?token=abc")
    assert (data.stream, data.scope, data.token) == (rid, "vod", "abc")


def test_a_clip_is_public_and_immutable_media() -> None:
    target = parse_target("/clips/AAAAAAAAAAAAAAAAAAAAAA.mp4?token=t")
    assert (target.scope, target.stream, target.token) == ("clip", None, None)


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=1000-", (1000, 1000)),  # past the end: 416
        ("bytes=-0", (1000, 1000)),
        ("bytes=5-2", None),  # invalid: ignored, the whole object
        ("bytes=0-1,5-6", None),  # several ranges: the whole object
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=" + "9" * 30 + "-", None),
    ],
)
def test_byte_ranges(header: str | None, span: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == span


def test_preload_hints_resolve_against_the_playlist() -> None:
    text = '#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="9.2.m4s"\n#EXT-X-PRELOAD-HINT:URI="x"\n'
    assert preload_hints("/hls/demo/180p/index.m3u8", text) == ["/hls/demo/180p/9.2.m4s"]


@pytest.mark.parametrize(
    ("status", "cc", "age", "ttl"),
    [
        (200, "public, max-age=86400, immutable", 0, 86400),
        (200, "public, max-age=12", 3, 9),
        (200, None, 0, 0),
        (200, "no-store", 0, 0),
        (404, None, 0, 1),
        (503, "public, max-age=2", 0, 2),
    ],
)
def test_freshness(status: int, cc: str | None, age: float, ttl: float) -> None:
    assert freshness(status, cc, age) == ttl


def entry(size: int, ttl: float = 10, received: float = 0) -> CachedResponse:
    return CachedResponse(200, {}, b"x" * size, received, ttl=ttl)


def test_lru_is_bounded_by_bytes_and_drops_the_least_recently_served() -> None:
    cache = ResponseCache(capacity=3 * 1600)
    for key in "abc":
        assert cache.put(key, entry(1000), now=0)
    assert cache.get("a", now=1) is not None  # a is now the most recent
    cache.put("d", entry(1000), now=1)
    assert cache.get("b", now=1) is None and cache.get("a", now=1) is not None
    assert cache.size <= cache.capacity
    assert not cache.put("huge", entry(10_000), now=1)
    assert cache.get("c", now=11) is None  # expired


async def test_concurrent_asks_share_one_fetch_and_a_leaving_waiter_cancels_nothing() -> None:
    collapser: Collapser[str] = Collapser()
    calls = 0
    release = asyncio.Event()

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "body"

    futures = [collapser.start("k", fetch) for _ in range(50)]
    assert [joined for _, joined in futures].count(False) == 1
    waiters = [asyncio.ensure_future(collapser.wait(f)) for f, _ in futures]
    await asyncio.sleep(0)
    assert collapser.waiters == 50
    waiters[0].cancel()
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert results == ["body"] * 49 and calls == 1 and "k" not in collapser


def test_viewers_are_distinct_clients_seen_within_the_window() -> None:
    tracker = ViewerTracker(window=10)
    for client in ("a", "b", "a"):
        tracker.seen("demo", client, now=0)
    tracker.seen("other", "a", now=5)
    assert tracker.counts(now=9) == {"demo": 2, "other": 1}
    assert tracker.counts(now=12) == {"other": 1}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--origin", "ftp://x"], "--origin takes http(s):// URLs"),
        (["--origin", "http://a", "--listen", "8081"], "--listen takes HOST:PORT"),
        (["--origin", "http://a", "--cache-bytes", "10"], "--cache-bytes must be at least"),
        ([], "give --origin URL(s), or --cluster postgresql://"),
        (["--cluster", "mysql://x"], "--cluster takes the cluster store's postgresql:// URL"),
        (["--cluster", "postgresql://x", "--node-timeout", "0"], "--node-timeout must be in"),
    ],
)
def test_edge_arguments_are_checked(argv: list[str], error: str) -> None:
    parser = argparse.ArgumentParser()
    add_edge_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(ValueError, match=re.escape(error)):
        edge_config(parser.parse_args(["edge", *argv]))
    config = edge_config(parser.parse_args(["edge", "--origin", "http://a/,http://b:1"]))
    assert config.origins == ("http://a/", "http://b:1") and config.port == 8081
    config = edge_config(parser.parse_args(["edge", "--cluster", "postgresql://db/x"]))
    assert config.origins == () and config.cluster == "postgresql://db/x"
