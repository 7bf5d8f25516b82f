"""HTTP/1.1 response heads as bytes (no I/O): fixed lines rendered once, Age and Date per second.

A head here ends after its last header line; the connection adds the ``Connection`` line (if
any) and the blank line, because keep-alive is the request's business, not the object's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

SERVER = b"Server: shopcast-edge/1\r\n"
#: Statuses that never carry a body, hence no Content-Length (RFC 9110 8.6).
_NO_BODY = frozenset({204, 304})


def status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value`` lines; a name or value that could split the head is dropped."""
    out = []
    for name, value in headers:
        text = f"{name}: {value}\r\n"
        if text.count("\r") == 1 and text.count("\n") == 1 and ":" not in name and name:
            out.append(text)
    return "".join(out).encode("latin-1", errors="replace")


class DateLine:
    """The ``Date`` line (RFC 9110 6.6.1), formatted once per wall-clock second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._second = second
            self._line = f"Date: {formatdate(second, usegmt=True)}\r\n".encode("ascii")
        return self._line


class ResponseHead:
    """One object's head: status and fixed headers rendered once, then Age and Date added.

    ``render`` returns the same bytes object until the Age value or the Date second changes,
    so all the waiters of a collapsed fetch (and every hit within a second) share one head.
    """

    __slots__ = ("_age", "_date", "_fixed", "_head", "_length", "_status")

    def __init__(self, status: int, headers: Iterable[tuple[str, str]], length: int) -> None:
        self._status = status
        self._fixed = status_line(status) + SERVER + header_lines(headers)
        self._length = length
        self._age = -1
        self._date = b""
        self._head = b""

    def render(self, age: int, date: bytes, length: int | None = None) -> bytes:
        """The head for the object's own body, or for a body of ``length`` bytes made from it."""
        if length is None or length == self._length:
            if age != self._age or date is not self._date:
                self._age, self._date = age, date
                self._head = self._build(age, date, self._length)
            return self._head
        return self._build(age, date, length)

    def _build(self, age: int, date: bytes, length: int) -> bytes:
        length_line = b"" if self._status in _NO_BODY else b"Content-Length: %d\r\n" % length
        return b"%sAge: %d\r\n%s%s" % (self._fixed, age, date, length_line)


def simple_head(status: int, headers: Iterable[tuple[str, str]], length: int, date: bytes) -> bytes:
    """A head for a response the edge makes itself (errors, preflight, metrics)."""
    length_line = b"" if status in _NO_BODY else b"Content-Length: %d\r\n" % length
    return status_line(status) + SERVER + date + header_lines(headers) + length_line


#: The process's Date line (one clock, so one formatting per second for every response).
http_date = DateLine()
