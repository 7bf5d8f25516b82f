"""The edge's HTTP/1.1 side without sockets: prepared heads, and connections fed bytes directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.http import RawRequestMessage

from cdn_edge.cache import CachedResponse
from cdn_edge.collapse import Collapser
from cdn_edge.http1 import MAX_QUEUED, EdgeConnection
from cdn_edge.wire import DateLine, ResponseHead, simple_head
from ingest.shown import REASON_CHARS

DATE = b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.1", 5555) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.out += chunk

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Handler:
    """Answers ``/now/<body>`` at once and ``/later/<body>`` when the test says so."""

    def __init__(self) -> None:
        self.connections: set[EdgeConnection] = set()
        self.later: list[tuple[EdgeConnection, bytes]] = []
        self.seen: list[tuple[str, str]] = []

    def dispatch(self, conn: EdgeConnection, request: RawRequestMessage) -> None:
        self.seen.append((request.method, request.path))
        kind, _, body = request.path[1:].partition("/")
        if kind == "later":
            self.later.append((conn, body.encode()))
        else:
            conn.respond(simple_head(200, (), len(body), DATE), body.encode())

    def release(self) -> None:
        for conn, body in self.later:
            conn.respond(simple_head(200, (), len(body), DATE), body)
        self.later.clear()


_LOOPS: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(autouse=True)
def _close_loops() -> Iterator[None]:
    yield
    while _LOOPS:
        _LOOPS.pop().close()


def connect() -> tuple[EdgeConnection, FakeTransport, Handler]:
    handler = Handler()
    _LOOPS.append(asyncio.new_event_loop())  # only its clock is used
    conn = EdgeConnection(handler, _LOOPS[-1])
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, handler


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: edge", *extra, "", ""]
    return "\r\n".join(lines).encode()


def bodies(out: bytes) -> list[bytes]:
    """Bodies of the responses in ``out`` (each has a Content-Length)."""
    found = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        found.append(rest[:length])
        out = rest[length:]
    return found


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_pipelined_requests_are_answered_in_order_even_when_the_first_waits(split: str) -> None:
    conn, transport, handler = connect()
    data = get("/later/a") + get("/now/b") + get("/now/c")
    chunks = [data] if split == "whole" else [data[i : i + 1] for i in range(len(data))]
    for chunk in chunks:
        conn.data_received(chunk)
    assert transport.out == b"" and [p for _, p in handler.seen] == ["/later/a"]
    handler.release()
    assert bodies(bytes(transport.out)) == [b"a", b"b", b"c"]
    assert not transport.closed and conn.idle


def test_head_gets_no_body_and_keep_alive_follows_the_request() -> None:
    conn, transport, _ = connect()
    conn.data_received(get("/now/xyz", method="HEAD"))
    assert transport.out.endswith(b"Content-Length: 3\r\n\r\n")
    transport.out.clear()
    conn.data_received(get("/now/x", "Connection: keep-alive", version="1.0"))
    assert b"Connection: keep-alive\r\n\r\nx" in transport.out and not transport.closed
    conn.data_received(get("/now/y", "Connection: close"))
    assert transport.out.endswith(b"Connection: close\r\n\r\ny") and transport.closed


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (get("/now/" + "a" * 9000), b"400"),
        (get("/now/a", "Content-Length: 3") + b"abc", b"400"),
        (b"GET /now/a HTTP/1.1\r\n\r\n", b"400"),  # no Host
        (b"X" * 6000 + b" /now/a HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),  # quoted by the parser
        (b"GET /" + b"\x01" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),
    ],
)
def test_what_cannot_be_parsed_or_carries_a_body_is_refused_and_closed(
    data: bytes, status: bytes
) -> None:
    conn, transport, handler = connect()
    conn.data_received(data + get("/now/after"))
    assert transport.out.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close\r\n" in transport.out and transport.closed
    assert handler.seen == []
    body = bytes(transport.out).partition(b"\r\n\r\n")[2]
    assert len(body) <= REASON_CHARS + 20, body  # a peer's bytes are never echoed whole


def test_a_client_that_pipelines_too_much_is_paused_until_answers_drain() -> None:
    conn, transport, handler = connect()
    conn.data_received(get("/later/a") + get("/now/b") * (MAX_QUEUED + 1))
    assert not transport.reading
    handler.release()
    assert transport.reading and len(bodies(bytes(transport.out))) == MAX_QUEUED + 2


def test_an_answer_for_a_client_that_left_is_dropped() -> None:
    conn, transport, handler = connect()
    conn.data_received(get("/later/a"))
    conn.connection_lost(None)
    handler.release()
    assert transport.out == b"" and handler.connections == set()


def test_heads_are_rendered_once_per_age_and_date() -> None:
    head = ResponseHead(200, [("Content-Type", "video/mp4"), ("X-Bad", "a\r\nSet-Cookie: x")], 10)
    first = head.render(3, DATE)
    assert head.render(3, DATE) is first
    assert first.startswith(b"HTTP/1.1 200 OK\r\nServer: shopcast-edge/1\r\n")
    assert b"Content-Type: video/mp4\r\nAge: 3\r\n" + DATE + b"Content-Length: 10\r\n" in first
    assert b"Set-Cookie" not in first  # a value that would split the head is dropped
    assert head.render(4, DATE) != first
    assert b"Content-Length: 99\r\n" in head.render(4, DATE, 99)
    assert b"Content-Length" not in ResponseHead(204, [], 0).render(0, DATE)
    entry = CachedResponse(200, {"Age": "5"}, b"abc", 0.0)
    rendered = entry.head.render(7, DATE)
    assert b"Age: 7\r\n" in rendered and b"Age: 5" not in rendered
    assert b"Content-Type: application/octet-stream\r\n" in rendered


def test_the_date_line_changes_with_the_second() -> None:
    date = DateLine()
    assert date(0.2) == DATE and date(0.9) is date(0.2)
    assert date(1.0) == b"Date: Thu, 01 Jan 1970 00:00:01 GMT\r\n"


async def test_joined_waiters_are_answered_in_one_pass() -> None:
    collapser: Collapser[str] = Collapser()
    release = asyncio.Event()
    answers: list[str] = []

    async def fetch() -> str:
        await release.wait()
        return "body"

    def answer(future: asyncio.Future[str]) -> None:
        answers.append(future.result())
        if len(answers) == 1:
            raise RuntimeError("one waiter failing leaves the others answered")

    joined = [collapser.join("k", fetch, answer) for _ in range(5)]
    assert joined == [False, True, True, True, True] and collapser.waiters == 5
    release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert answers == ["body"] * 5 and collapser.waiters == 0 and "k" not in collapser
