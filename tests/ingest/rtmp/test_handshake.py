"""Server handshake (§5.2): plain, digest at both offset schemes, fallback, bad versions."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.handshake import (
    GENUINE_FMS_KEY,
    HANDSHAKE_SIZE,
    HandshakeError,
    HandshakeState,
    ServerHandshake,
    find_client_digest,
)

from .rtmp_client import digest_c0c1, plain_c0c1, vector


def fixed_random(n: int) -> bytes:
    return bytes((i * 13 + 1) & 0xFF for i in range(n))


def answer(c0c1: bytes) -> tuple[ServerHandshake, bytes]:
    hs = ServerHandshake(fixed_random)
    hs.receive_data(c0c1)
    out = hs.data_to_send()
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE and out[0] == 3
    return hs, out


def test_plain_handshake_echoes_c1_in_s2() -> None:
    c0c1 = plain_c0c1()
    hs, out = answer(c0c1)
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert s1[4:8] == b"\0\0\0\0" and s2 == c0c1[1:]
    assert not hs.digest and hs.state is HandshakeState.WAIT_C2
    hs.receive_data(bytes(HANDSHAKE_SIZE) + b"first chunk")
    assert hs.complete and hs.leftover == b"first chunk"


@pytest.mark.parametrize("base", [8, 772])
def test_digest_handshake_signs_s1_and_s2(base: int) -> None:
    c0c1 = digest_c0c1(base)
    found = find_client_digest(c0c1[1:])
    assert found is not None and found[0] == base
    hs, out = answer(c0c1)
    assert hs.digest
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert s1[4:8] != b"\0\0\0\0"
    # S1 digest: same offset scheme, keyed with the first 36 bytes of the FMS key.
    off = base + 4 + sum(s1[base : base + 4]) % 728
    want = hmac.new(GENUINE_FMS_KEY[:36], s1[:off] + s1[off + 32 :], hashlib.sha256).digest()
    assert s1[off : off + 32] == want
    # S2: last 32 bytes sign the rest with a key derived from the client's digest.
    key = hmac.new(GENUINE_FMS_KEY, found[1], hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_bad_digest_falls_back_to_plain() -> None:
    c0c1 = bytearray(digest_c0c1(8))
    c0c1[100] ^= 0xFF  # breaks the HMAC whichever the offset
    hs, out = answer(bytes(c0c1))
    assert not hs.digest
    assert out[1 + HANDSHAKE_SIZE :] == bytes(c0c1[1:])


def test_ffmpeg_c1_validates() -> None:
    data, _ = vector("publish_plain")
    assert find_client_digest(data[1 : 1 + HANDSHAKE_SIZE]) is not None


@pytest.mark.parametrize("version", [0, 6, 0x16, 0xFF])
def test_other_versions_are_refused(version: int) -> None:
    hs = ServerHandshake()
    with pytest.raises(HandshakeError, match=f"unsupported RTMP version {version}"):
        hs.receive_data(bytes((version,)))
    assert issubclass(HandshakeError, RTMPProtocolError)


def test_byte_at_a_time() -> None:
    hs = ServerHandshake(fixed_random)
    data = digest_c0c1(772) + bytes(HANDSHAKE_SIZE) + b"\x03"
    out = b""
    for i in range(len(data)):
        hs.receive_data(data[i : i + 1])
        out += hs.data_to_send()
        if i < 1536:
            assert out == b""
    assert hs.complete and hs.digest and hs.leftover == b"\x03"
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    hs.receive_data(b"more")
    assert hs.leftover == b"\x03more"
