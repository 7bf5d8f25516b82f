"""WHIP offer checking under mutated SDP: an answer or an ``OfferError`` (400/422), nothing else."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.harness.whip_client import make_offer, make_offerer
from ingest.whip.endpoint import check_offer
from ingest.whip.session import OfferError


@pytest.fixture(scope="module")
def offer_lines() -> list[str]:
    """A browser-like offer (aiortc, H.264 + Opus), one SDP line per entry."""

    async def offer() -> str:
        pc = make_offerer("H264", True)
        try:
            return await make_offer(pc)
        finally:
            await pc.close()

    return asyncio.run(offer()).split("\r\n")


def check(text: str) -> None:
    try:
        check_offer(text)
    except OfferError as exc:
        assert exc.status in (400, 422)
        assert len(str(exc)) < 400  # peer text is cut short in the reason


SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(st.data())
def test_mutated_offer_lines(offer_lines: list[str], data: st.DataObject) -> None:
    lines = list(offer_lines)
    for _ in range(data.draw(st.integers(1, 6))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "repeat", "cut", "junk", "swap"]))
        line = lines[index]
        if action == "drop" and len(lines) > 1:
            del lines[index]
        elif action == "repeat":
            lines.insert(index, line)
        elif action == "cut":
            lines[index] = line[: data.draw(st.integers(0, len(line)))]
        elif action == "junk":
            lines[index] = line[:2] + data.draw(st.text(max_size=40))
        else:
            other = data.draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
    check("\r\n".join(lines))


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    check(text)
    check("v=0\r\n" + text)
