"""The registry refuses in its own words (RefusalReason); each protocol maps every reason."""

from __future__ import annotations

import pytest

from ingest.rtmp.server import REFUSAL_CODES
from ingest.sessions import LiveStreams, PublishRefused, RefusalReason
from ingest.whip.endpoint import REFUSAL_STATUS


class _Publisher:
    protocol = "test"

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.kicked: list[str] = []

    def kick(self, reason: str) -> None:
        self.kicked.append(reason)


async def test_each_refusal_has_its_reason_and_detail() -> None:
    async def keys(key: str) -> str | None:
        return {"good-key": "demo"}.get(key)

    streams = LiveStreams(keys, on_duplicate="reject")
    with pytest.raises(PublishRefused) as caught:
        await streams.resolve("wrong-key")
    assert (caught.value.reason, caught.value.detail) == (
        RefusalReason.BAD_KEY,
        "unknown or invalid stream key",
    )
    await streams.start("good-key", _Publisher("a"))
    with pytest.raises(PublishRefused) as caught:
        await streams.start("good-key", _Publisher("b"))
    assert (caught.value.reason, caught.value.detail) == (
        RefusalReason.DUPLICATE,
        "stream demo is already being published",
    )

    async def deny(stream_id: str, publisher: object) -> str | None:
        return f"{stream_id}: not today"

    streams.admission = deny
    with pytest.raises(PublishRefused) as caught:
        await streams.admit("demo", _Publisher("c"))
    assert (caught.value.reason, caught.value.detail) == (
        RefusalReason.HOOK_DENIED,
        "demo: not today",
    )


def test_every_protocol_maps_every_reason_as_on_the_wire_before() -> None:
    assert REFUSAL_CODES == {
        RefusalReason.BAD_KEY: "NetStream.Publish.BadName",
        RefusalReason.DUPLICATE: "NetStream.Publish.BadName",
        RefusalReason.HOOK_DENIED: "NetStream.Publish.Rejected",
        RefusalReason.FULL: "NetStream.Publish.Rejected",
    }
    assert REFUSAL_STATUS == {
        RefusalReason.BAD_KEY: 401,
        RefusalReason.DUPLICATE: 409,
        RefusalReason.HOOK_DENIED: 403,
        RefusalReason.FULL: 503,
    }
