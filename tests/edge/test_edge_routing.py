"""Routing a live stream to its owner: the redirect target, the remembered owner (≤ 1 s, one
lookup for many asks), and ``fetch_live`` over real HTTP against small aiohttp origins that
redirect, vanish or stop carrying the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from benchmarks.harness.serve_env import SHOPCAST, free_port
from cdn_edge.routing import StreamRoutes, fetch_live, redirect_base
from cdn_edge.upstream import AllOriginsFailed, Origins

PART = "/hls/demo/180p/3.1.m4s"


@pytest.mark.parametrize(
    ("location", "target", "base"),
    [
        (
            "http://b:8080/hls/demo/180p/index.m3u8?_HLS_msn=4",
            "/hls/demo/180p/index.m3u8",
            "http://b:8080",
        ),
        (
            "https://b/prefix/hls/demo/master.m3u8",
            "/hls/demo/master.m3u8?token=x",
            "https://b/prefix",
        ),
        ("http://b/hls/other/master.m3u8", "/hls/demo/master.m3u8", None),  # not the same object
        ("/hls/demo/master.m3u8", "/hls/demo/master.m3u8", None),  # relative: not a move
        ("ftp://b/hls/demo/master.m3u8", "/hls/demo/master.m3u8", None),
        ("http://b/" + "x" * 3000, "/hls/demo/master.m3u8", None),
    ],
)
def test_redirect_base(location: str, target: str, base: str | None) -> None:
    assert redirect_base(location, target) == base


async def test_routes_are_remembered_for_the_ttl_and_looked_up_once() -> None:
    now = [100.0]
    asked: list[str] = []
    gate = asyncio.Event()

    async def lookup(stream: str) -> str | None:
        asked.append(stream)
        await gate.wait()
        return "http://c"

    routes = StreamRoutes(lookup, ttl=1.0, clock=lambda: now[0])
    waiting = [asyncio.ensure_future(routes.owner("demo")) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["http://c"] * 50
    assert asked == ["demo"]  # fifty viewers, one query
    now[0] += 0.9
    assert await routes.owner("demo") == "http://c" and asked == ["demo"]
    assert await routes.owner("demo", max_age=0.5) == "http://c" and len(asked) == 2
    now[0] += 1.0
    routes.learn("demo", "http://b")  # a redirect said so
    assert await routes.owner("demo") == "http://b" and len(asked) == 2
    routes.forget("demo")
    assert await routes.owner("demo") == "http://c" and len(asked) == 3
    assert await StreamRoutes(None).owner("demo") is None  # no store: the configured origins


@asynccontextmanager
async def origin(handler: Callable[[web.Request], web.Response]) -> AsyncIterator[str]:
    """A small HTTP origin on 127.0.0.1 answering every GET with ``handler``."""

    async def handle(request: web.Request) -> web.Response:
        return handler(request)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def serves(name: str, hits: list[str]) -> Callable[[web.Request], web.Response]:
    def handler(request: web.Request) -> web.Response:
        hits.append(f"{name} {request.path_qs}")
        return web.Response(body=f"{name}:{request.path_qs}".encode())

    return handler


def redirects_to(base: str, hits: list[str]) -> Callable[[web.Request], web.Response]:
    def handler(request: web.Request) -> web.Response:
        hits.append(f"redirect {request.path_qs}")
        raise web.HTTPTemporaryRedirect(base + request.path_qs)

    return handler


def missing(hits: list[str]) -> Callable[[web.Request], web.Response]:
    def handler(request: web.Request) -> web.Response:
        hits.append(f"404 {request.path_qs}")
        return web.Response(status=404, text="no such live stream")

    return handler


async def test_an_origin_redirect_is_followed_once_and_remembered() -> None:
    hits: list[str] = []
    target = "/hls/demo/180p/index.m3u8?_HLS_msn=4&_HLS_part=1"
    async with (
        origin(serves("owner", hits)) as owner,
        origin(redirects_to(owner, hits)) as other,
        aiohttp.ClientSession() as http,
    ):
        routes = StreamRoutes(None)
        result = await fetch_live(http, Origins([other]), routes, "demo", target, 5)
        assert result.status == 200 and result.body == f"owner:{target}".encode()
        assert hits == [f"redirect {target}", f"owner {target}"]  # query kept
        # Remembered: the next object goes straight to the owner.
        result = await fetch_live(http, Origins([other]), routes, "demo", PART, 5)
        assert result.body == f"owner:{PART}".encode() and hits[-1] == f"owner {PART}"
        assert len(hits) == 3


async def test_a_redirect_loop_is_an_error_not_a_loop() -> None:
    hits: list[str] = []
    bases: list[str] = []

    def bounce(request: web.Request) -> web.Response:
        hits.append(f"redirect {request.path_qs}")
        raise web.HTTPTemporaryRedirect(bases[0] + request.path_qs)  # to itself

    async with origin(bounce) as bouncing, aiohttp.ClientSession() as http:
        bases.append(bouncing)
        with pytest.raises(AllOriginsFailed, match="redirected"):
            await fetch_live(http, Origins([bouncing]), StreamRoutes(None), "demo", PART, 5)
        assert hits == [f"redirect {PART}"] * 2  # followed once, then given up


async def test_a_move_is_followed_on_404_and_on_a_dead_owner() -> None:
    hits: list[str] = []
    owner_now = {"url": ""}

    async def lookup(stream: str) -> str | None:
        return owner_now["url"] or None

    async with (
        origin(missing(hits)) as old,
        origin(serves("new", hits)) as new,
        aiohttp.ClientSession() as http,
    ):
        routes = StreamRoutes(lookup)
        routes.learn("demo", old)  # remembered before the move
        owner_now["url"] = new
        result = await fetch_live(http, Origins([]), routes, "demo", PART, 5)
        assert result.body == f"new:{PART}".encode()
        assert hits == [f"404 {PART}", f"new {PART}"]
        # The remembered owner is gone altogether (connection refused): re-resolved too.
        async with origin(serves("dead", hits)) as dead:
            pass
        routes.learn("demo", dead)
        result = await fetch_live(http, Origins([]), routes, "demo", PART, 5)
        assert result.body == f"new:{PART}".encode()
        # Nobody owns it: the 404 stands (no second try at the same place).
        owner_now["url"] = ""
        routes.forget("demo")
        async with origin(missing(hits)) as any_origin:
            result = await fetch_live(http, Origins([any_origin]), routes, "demo", PART, 5)
        assert result.status == 404 and hits[-1] == f"404 {PART}" and hits[-2] != f"404 {PART}"


async def test_a_cluster_edge_without_its_database_says_why_and_exits() -> None:
    port = free_port()  # nothing listens there
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST,
        "edge",
        "--cluster",
        f"postgresql://shopcast@127.0.0.1:{port}/none",
        "--listen",
        f"127.0.0.1:{free_port()}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "shopcast edge: the cluster store cannot be used" in err.decode(), err.decode()
    assert "Traceback" not in err.decode()
