"""Publisher cue points: an RTMP publisher (real TCP, real H.264/AAC from Debian ffmpeg replayed
from an FLV file in real time) sends ``onCuePoint`` / ``onTextData`` / ``@setDataFrame``
``onShopcastTag`` data messages; each becomes a tag (source "cue") stamped on the frame at the
message's own timestamp, listed by the API and ranged in every rendition's playlist."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.rtmp_replayer import FlvTag, flv_tags
from ingest.rtmp import amf0
from ingest.rtmp.client import RTMPPublisher

from .conftest import Origin, ffmpeg_publish_args, requires_ffmpeg
from .test_tags_api import (
    AUTH,
    FRAME,
    all_dateranges,
    epoch,
    get_tags,
    post_tag,
    renditions,
    wait_for_emsg,
)

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
SECONDS = 8


@pytest.fixture(scope="module")
def flv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 360×640 testsrc2 + sine (H.264 no B-frames, GOP 1 s; AAC) as FLV, once."""
    path = tmp_path_factory.mktemp("cue") / "show.flv"
    args = ffmpeg_publish_args(str(path), seconds=SECONDS, size="360x640")  # -g 30 -bf 0
    done = subprocess.run(args, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return path


async def replay(
    publisher: RTMPPublisher, tags: list[FlvTag], inserts: dict[int, list[tuple[Any, ...]]]
) -> None:
    """Send the FLV's tags paced in real time; ``inserts`` data messages go out at their
    timestamps, before the first media tag at or after them."""
    pending = sorted(inserts.items())
    start = time.monotonic()
    for tag in tags:
        while pending and pending[0][0] <= tag.timestamp:
            ts, messages = pending.pop(0)
            for values in messages:
                publisher.send_data(*values, timestamp=ts)
        delay = start + tag.timestamp / 1000 - time.monotonic()
        if delay > 0:
            await publisher.drain()
            await asyncio.sleep(delay)
        if tag.type_id == 18:
            values = amf0.decode_all(tag.payload)
            publisher.send_data("@setDataFrame", *values, timestamp=tag.timestamp)
        else:
            publisher.send_media(tag.type_id, tag.timestamp, tag.payload)
    await publisher.drain()


async def test_cue_points_become_tags_on_their_frames(origin: Origin, flv_file: Path) -> None:
    tags = list(flv_tags(flv_file.read_bytes()))
    assert {t.type_id for t in tags} == {8, 9, 18}
    assert max(t.timestamp for t in tags) >= (SECONDS - 1) * 1000
    # Cue points on real frames near 3 s, 4 s and 4.5 s (ffmpeg's FLV frames are not on
    # whole-millisecond multiples of 1/30 s, and start a few ms in).
    video_ts = sorted({t.timestamp for t in tags if t.type_id == 9 and t.payload[1] == 1})
    cue_ms, text_ms, frame_ms = (
        min(video_ts, key=lambda t: abs(t - ms)) for ms in (3000, 4000, 4500)
    )
    assert abs(cue_ms - 3000) <= 17

    cue = {
        "name": "shopcast",
        "time": cue_ms / 1000,
        "type": "event",
        "parameters": {"kind": "product", "product_id": "sku-9", "data": '{"title":"x"}'},
    }
    text = {"type": "Text", "text": json.dumps({"kind": "product", "product_id": "sku-10"})}
    frame_tag = amf0.ECMAArray(kind="deal", product_id="sku-11", duration=20.0)
    inserts: dict[int, list[tuple[Any, ...]]] = {
        cue_ms: [("onCuePoint", cue)],
        text_ms: [("onTextData", text)],
        frame_ms: [("@setDataFrame", "onShopcastTag", frame_tag)],
        1500: [("onCuePoint", {"name": "chapter", "parameters": {"title": "no tag"}})],
    }

    publisher = RTMPPublisher("127.0.0.1", origin.server.rtmp.port, "live", await origin.key())
    await publisher.connect()
    sending = asyncio.ensure_future(replay(publisher, tags, inserts))
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            base = origin.http
            # Wait for the three cue tags to be listed (they are created as the messages land).
            deadline = time.monotonic() + SECONDS + 5
            while True:
                listed = await get_tags(http, base)
                cues = sorted(
                    (t for t in listed.values() if t["source"] == "cue"), key=lambda t: t["pts"]
                )
                if len(cues) >= 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert [(t["pts"], t["product_id"]) for t in cues] == [
                (cue_ms, "sku-9"),
                (text_ms, "sku-10"),
                (frame_ms, "sku-11"),
            ], cues
            on_cue, on_text, on_frame = cues
            assert on_cue["kind"] == "product" and on_cue["data"] == {"title": "x"}
            assert on_text["kind"] == "product" and on_text["data"] == {}
            assert on_frame["kind"] == "deal" and on_frame["duration"] == 20
            assert all(t["late"] is False for t in cues)  # stamped before their parts were cut

            # The same frame named over the API by its PTS gets the same date: the cue sits on
            # the frame with that source timestamp.
            status, api = await post_tag(
                http, base, {"kind": "product", "product_id": "sku-api", "at": cue_ms}
            )
            assert status == 201, api
            assert api["program_date_time"] == on_cue["program_date_time"]
            # A second apart in the source, a second apart in program time (to a frame).
            gap = epoch(on_text["program_date_time"]) - epoch(on_cue["program_date_time"])
            assert abs(gap - (text_ms - cue_ms) / 1000) <= float(FRAME) / 2 + 0.002

            names = await renditions(http, base)
            assert sorted(names) == ["180p", "360p"]
            found = await all_dateranges(http, base)
            for name in names:
                for t in cues:
                    assert found[name][t["id"]]["START-DATE"] == t["program_date_time"], name
                assert found[name][on_cue["id"]]["X-COM-SHOPCAST-PRODUCT"] == "sku-9"
                assert found[name][on_frame["id"]]["DURATION"] == "20.000"

            # And the emsg ID3 on that frame's part, in every rendition.
            scans = await wait_for_emsg(http, base, [t["id"] for t in cues])
            for name, scan in scans.items():
                for t in cues:
                    events = scan.events.get(t["id"])
                    assert events and len(events) == 1, (name, t["id"])
                    assert events[0].on_frame
                    pdt = events[0].program_date_time
                    assert pdt is not None
                    assert abs(pdt - epoch(t["program_date_time"])) <= float(FRAME) / 2 + 0.002
        await asyncio.wait_for(sending, SECONDS + 10)
    finally:
        sending.cancel()
        await publisher.close()
    # Data messages without a shopcast payload made no tag.
    assert [s for s in publisher.statuses if s.level == "error"] == []
