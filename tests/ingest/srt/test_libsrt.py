"""The libsrt binding against a real SRT caller (Debian's srt-live-transmit) on loopback."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from ingest.srt.server import UNAVAILABLE

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
SLT = shutil.which("srt-live-transmit")
requires_slt = pytest.mark.skipif(SLT is None, reason="srt-live-transmit (srt-tools) missing")
PASSPHRASE = "correct horse battery"

if UNAVAILABLE is None:
    from native.libsrt import EPOLL_IN, SrtError, SrtPoller, SrtSocket


@pytest.fixture
def listener() -> Iterator[SrtSocket]:
    sock = SrtSocket.listener("127.0.0.1", 0, latency_ms=250, passphrase=PASSPHRASE, pbkeylen=32)
    yield sock
    sock.close()


def test_options_read_back(listener: SrtSocket) -> None:
    assert listener.get_int("latency") == 250
    assert listener.get_int("pbkeylen") == 32
    assert listener.get_int("rcvsyn") == 0  # non-blocking: only SrtPoller.wait blocks
    assert listener.local_port > 0


def test_bad_address_and_port_in_use(listener: SrtSocket) -> None:
    with pytest.raises(ValueError, match="IPv4"):
        SrtSocket.listener("localhost", 0)
    with pytest.raises(SrtError, match="already listening on the same port"):
        SrtSocket.listener("127.0.0.1", listener.local_port)


def caller(port: int, query: str) -> subprocess.Popen[bytes]:
    """srt-live-transmit calling us; it sends what the test writes to its stdin."""
    assert SLT is not None
    proc = subprocess.Popen(
        # no auto-reconnect: it hangs up at the end of its input; -t: never outlive the test
        [SLT, "-q", "-a:no", "-t:8", "file://con", f"srt://127.0.0.1:{port}?{query}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc


def serve(
    listener: SrtSocket, seconds: float, proc: subprocess.Popen[bytes], payload: bytes
) -> tuple[bytes | None, bytes, str]:
    """Accept one caller, give it ``payload`` to send, read until it hangs up: (its stream id,
    the bytes, how it ended). Live mode drops what a caller reads before it is connected."""
    poller = SrtPoller()
    poller.add(listener)
    conn = None
    stream_id, data, ended = None, bytearray(), "timeout"
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and ended == "timeout":
            for fd, events in poller.wait(100):
                if fd == listener.fd and conn is None:
                    accepted = listener.accept()
                    assert accepted is not None and accepted[1].startswith("127.0.0.1:")
                    conn = accepted[0]
                    stream_id = conn.stream_id
                    poller.add(conn)
                    assert proc.stdin is not None
                    proc.stdin.write(payload)
                    proc.stdin.close()
                elif conn is not None and fd == conn.fd and events & EPOLL_IN:
                    try:
                        while (message := conn.recv()) is not None:
                            data += message
                    except SrtError as exc:
                        ended = f"closed {exc.code}"
    finally:
        if conn is not None:
            conn.close()
        poller.close()
    return stream_id, bytes(data), ended


@requires_slt
def test_caller_stream_id_and_bytes_arrive(listener: SrtSocket) -> None:
    # whole 1456-byte chunks: srt-live-transmit sends what it reads from stdin chunk by chunk
    payload = (bytes(range(256)) * 40)[: 1456 * 7]
    stream_id = "#!::r=demo,m=publish,k=" + "k" * 40
    query = f"passphrase={PASSPHRASE}&pbkeylen=32&linger=2&streamid={stream_id}"
    proc = caller(listener.local_port, query)
    got_id, data, ended = serve(listener, 10, proc, payload)
    proc.wait(10)
    assert got_id == stream_id.encode()
    assert data == payload
    assert ended == "closed 2001"  # SRT_ECONNLOST once the caller hung up


@requires_slt
def test_wrong_passphrase_never_connects(listener: SrtSocket) -> None:
    proc = caller(listener.local_port, "passphrase=not the passphrase&streamid=x")
    got_id, data, _ = serve(listener, 3, proc, b"x" * 1000)
    proc.kill()
    proc.wait()
    assert got_id is None and data == b""


def test_wait_releases_the_gil() -> None:
    poller = SrtPoller()
    sock = SrtSocket.listener("127.0.0.1", 0)
    poller.add(sock)
    waiter = threading.Thread(target=poller.wait, args=(400,))
    waiter.start()
    counted = 0
    while waiter.is_alive():
        counted += 1
    sock.close()
    poller.close()
    # with the GIL held for 400 ms this thread would barely run; it counts millions of steps
    assert counted > 100_000


@requires_slt
def test_listen_check_rejects_in_the_handshake() -> None:
    seen: list[tuple[bytes, str]] = []

    def check(stream_id: bytes, peer: str) -> int:
        seen.append((stream_id, peer))
        return 1403  # SRT_REJX_FORBIDDEN

    sock = SrtSocket.listener("127.0.0.1", 0, check=check)
    try:
        proc = caller(sock.local_port, "streamid=publish:nope")
        got_id, data, _ = serve(sock, 2, proc, b"x" * 1316)
        proc.kill()
        proc.wait()
    finally:
        sock.close()
    assert got_id is None and data == b""  # never reached accept
    assert seen and seen[0][0] == b"publish:nope" and seen[0][1].startswith("127.0.0.1:")
