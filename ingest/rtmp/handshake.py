"""RTMP handshake (Adobe RTMP 1.0 spec §5.2), sans-I/O: the server side and a plain client side.

Plain handshake per §5.2.2-§5.2.4, plus the digest ("complex", Flash Player 9+) handshake that
ffmpeg, OBS and Flash send: C1 carries an HMAC-SHA256 digest keyed with the Genuine FP key; the
server answers with an S1 digest keyed with the FMS key and an S2 signed with a key derived from
the client's digest. If the C1 digest does not validate, the plain handshake is used.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable

from ingest.rtmp.errors import RTMPProtocolError

RTMP_VERSION = 3  # §5.2.2: C0/S0 version byte
HANDSHAKE_SIZE = 1536  # §5.2.3: C1/S1/C2/S2 length
_DIGEST_SIZE = 32
# The 32 random-looking bytes both well-known keys end with (public; see Adobe's FP/FMS).
_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes; C1 uses the first 30
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes; S1 uses 36
_FP_PARTIAL = GENUINE_FP_KEY[:30]
_FMS_PARTIAL = GENUINE_FMS_KEY[:36]
# Digest block offsets: the 764-byte digest block sits after time+version (8) or after the key
# block (8 + 764). The four bytes at its start, summed mod 728, locate the 32-byte digest.
_DIGEST_BASES = (8, 772)
SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))  # any non-zero version marks a digest S1


class HandshakeError(RTMPProtocolError):
    """C0/C1/C2 violated §5.2."""


class HandshakeState(enum.Enum):
    WAIT_C0C1 = "wait C0+C1"
    WAIT_C2 = "wait C2"
    DONE = "done"


def _digest_offset(block: bytes | bytearray, base: int) -> int:
    return base + 4 + sum(block[base : base + 4]) % 728


def _hmac(key: bytes, data: bytes | bytearray) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """Return ``(base, digest)`` if C1 has a valid Genuine FP digest at either offset scheme."""
    for base in _DIGEST_BASES:
        off = _digest_offset(c1, base)
        digest = c1[off : off + _DIGEST_SIZE]
        expected = _hmac(_FP_PARTIAL, c1[:off] + c1[off + _DIGEST_SIZE :])
        if hmac.compare_digest(digest, expected):
            return base, digest
    return None


class ServerHandshake:
    """Server side of the handshake: feed client bytes, read back S0+S1+S2.

    ``random_bytes`` is injected so tests are deterministic; ``leftover`` holds the bytes that
    followed C2 (clients often send their first chunk together with C2).
    """

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.state = HandshakeState.WAIT_C0C1
        self.client_version = 0
        self.digest = False
        self.leftover = b""
        self._random = random_bytes
        self._in = bytearray()
        self._out = bytearray()

    @property
    def complete(self) -> bool:
        return self.state is HandshakeState.DONE

    @property
    def buffered(self) -> int:
        return len(self._in)

    def receive_data(self, data: bytes) -> None:
        """Consume client bytes; raises :class:`HandshakeError` on a bad C0."""
        if self.state is HandshakeState.DONE:
            self.leftover += data
            return
        self._in += data
        if self.state is HandshakeState.WAIT_C0C1:
            if not self._in:
                return
            if self._in[0] != RTMP_VERSION:
                # §5.2.2: 3 is the only version; 6 is RTMPE (encrypted), which we do not speak.
                raise HandshakeError(
                    f"unsupported RTMP version {self._in[0]} in C0 (only 3 is supported;"
                    " RTMPE/encrypted RTMP is not)"
                )
            if len(self._in) < 1 + HANDSHAKE_SIZE:
                return
            c1 = bytes(self._in[1 : 1 + HANDSHAKE_SIZE])
            del self._in[: 1 + HANDSHAKE_SIZE]
            self.client_version = RTMP_VERSION
            self._out += bytes((RTMP_VERSION,)) + self._answer(c1)
            self.state = HandshakeState.WAIT_C2
        if self.state is HandshakeState.WAIT_C2 and len(self._in) >= HANDSHAKE_SIZE:
            # §5.2.4: C2 should echo S1; not checked, since several clients do not.
            self.leftover = bytes(self._in[HANDSHAKE_SIZE:])
            self._in.clear()
            self.state = HandshakeState.DONE

    def data_to_send(self) -> bytes:
        """Drain the queued S0/S1/S2 bytes."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _answer(self, c1: bytes) -> bytes:
        """Build S1+S2 for this C1: digest-style if C1's digest validates, else plain (§5.2.3)."""
        found = find_client_digest(c1) if c1[4:8] != b"\0\0\0\0" else None
        if found is None:
            # Plain: S1 = time, zero, random; S2 echoes C1 (time, time2, random echo).
            return b"\0\0\0\0" + b"\0\0\0\0" + self._random(HANDSHAKE_SIZE - 8) + c1
        self.digest = True
        base, client_digest = found
        s1 = bytearray(b"\0\0\0\0" + SERVER_VERSION + self._random(HANDSHAKE_SIZE - 8))
        off = _digest_offset(s1, base)  # answer with the client's offset scheme
        s1[off : off + _DIGEST_SIZE] = _hmac(_FMS_PARTIAL, s1[:off] + s1[off + _DIGEST_SIZE :])
        s2 = bytearray(self._random(HANDSHAKE_SIZE - _DIGEST_SIZE))
        s2 += _hmac(_hmac(GENUINE_FMS_KEY, client_digest), s2)
        return bytes(s1) + bytes(s2)


class ClientHandshake:
    """Client side of the plain handshake (§5.2.3): C0+C1 at once, C2 = S1's echo once S1 is in.

    ``leftover`` holds what followed S2 (servers send their first messages right behind it).
    """

    def __init__(
        self, epoch_ms: int = 0, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.state = HandshakeState.WAIT_C0C1  # here: waiting for S0+S1
        self.server_version = 0
        self.leftover = b""
        self._in = bytearray()
        # §5.2.3 C1: time (4 bytes), zero (4 bytes; zero keeps servers on the plain handshake)
        c1 = (
            (epoch_ms & 0xFFFFFFFF).to_bytes(4, "big") + bytes(4) + random_bytes(HANDSHAKE_SIZE - 8)
        )
        self._out = bytearray(bytes((RTMP_VERSION,)) + c1)

    @property
    def complete(self) -> bool:
        return self.state is HandshakeState.DONE

    @property
    def buffered(self) -> int:
        return len(self._in)

    def receive_data(self, data: bytes) -> None:
        """Consume server bytes; raises :class:`HandshakeError` on a bad S0."""
        if self.state is HandshakeState.DONE:
            self.leftover += data
            return
        self._in += data
        if self.state is HandshakeState.WAIT_C0C1:
            if not self._in:
                return
            if self._in[0] != RTMP_VERSION:
                raise HandshakeError(f"unsupported RTMP version {self._in[0]} in S0")
            if len(self._in) < 1 + HANDSHAKE_SIZE:
                return
            self.server_version = RTMP_VERSION
            self._out += self._in[1 : 1 + HANDSHAKE_SIZE]  # §5.2.4: C2 echoes S1
            del self._in[: 1 + HANDSHAKE_SIZE]
            self.state = HandshakeState.WAIT_C2  # here: waiting for S2
        if self.state is HandshakeState.WAIT_C2 and len(self._in) >= HANDSHAKE_SIZE:
            # S2 should echo C1; not checked, like the server does not check C2.
            self.leftover = bytes(self._in[HANDSHAKE_SIZE:])
            self._in.clear()
            self.state = HandshakeState.DONE

    def data_to_send(self) -> bytes:
        """Drain the queued C0/C1/C2 bytes."""
        out = bytes(self._out)
        self._out.clear()
        return out
