"""Multi-camera switching with real clients: two ffmpeg publishers (testsrc2 and a solid colour)
feed one stream as its ``main`` and ``closeup`` inputs; the API switches between them; playlists
are followed with blocking reloads and PyAV decodes the segments on either side of each switch."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from benchmarks.harness.browser import CHROMIUM
from benchmarks.harness.continuity import PlaylistWatch, decode_segment
from benchmarks.harness.whip_client import publish as whip_publish
from ingest.media import MediaKind
from packager.live import LivePackage
from shopcast.config import WhipSection
from shopcast.web import HLS_JS

from .conftest import (
    Origin,
    Receiver,
    ffmpeg_publish_args,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from .test_continuity import (
    advancing,
    api,
    fetch,
    origin,
    ready_show,
    receiver,
    serving,
    until,
    watching,
)

__all__ = ["origin", "receiver"]  # fixtures used here

pytestmark = [pytest.mark.e2e, requires_ffmpeg]

#: Times main dies and comes back in the flapping test.
FLAPS = 8
#: A solid colour: every decoded frame's luma is flat (testsrc2's is anything but).
SOLID = "color=c=0x3050c0:size=180x320:rate=30"
#: Luma standard deviation telling the two pictures apart (solid ≈ 0-2, testsrc2 ≈ 50+).
FLAT = 10.0


async def publish(
    origin: Origin, key: str, picture: str | None = None, gop: int | None = None
) -> asyncio.subprocess.Process:
    args = ffmpeg_publish_args(origin.rtmp_url(key), seconds=120, realtime=True)
    if picture is not None:
        args[args.index(next(a for a in args if a.startswith("testsrc2=")))] = picture
    if gop is not None:
        args[args.index("-g") + 1] = str(gop)
    return await start_ffmpeg(args)


def frames(init: bytes, segment: bytes) -> list[tuple[bool, float]]:
    """(keyframe, luma standard deviation) of every decoded video frame."""
    out = []
    with av.open(io.BytesIO(init + segment), mode="r", format="mp4") as container:
        for frame in container.decode(video=0):
            luma = np.asarray(frame.to_ndarray(format="gray"), dtype=np.float32)
            out.append((bool(frame.key_frame), float(luma.std())))
    return out


def timed_segments(text: str) -> list[tuple[float, float, str, int]]:
    """(PDT, duration, URI, discontinuity number) of every complete segment listed."""
    out = []
    disc, pdt, duration = 0, 0.0, None
    for line in text.splitlines():
        if line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            disc = int(line.split(":")[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc += 1
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            stamp = line.split(":", 1)[1].replace("Z", "+00:00")
            pdt = datetime.fromisoformat(stamp).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif duration is not None and line and not line.startswith("#"):
            out.append((pdt, duration, line, disc))
            duration = None
    return out


async def check_switch(
    origin: Origin,
    watches: dict[str, PlaylistWatch],
    disc: int,
    to_flat: bool,
    pdt: float,
    pdt_check: bool = True,
    old: bool = True,
) -> None:
    """Around discontinuity ``disc`` on every rendition: the old picture up to it, the new one
    from an IDR on, no gap in the PDT grid, the switch at the PDT the API answered."""
    await until(
        lambda: all([s for s in timed_segments(w.text) if s[3] == disc] for w in watches.values()),
        20,
        f"a complete segment after switch {disc}",
    )
    for name, w in watches.items():
        listed = timed_segments(w.text)
        after = next(i for i, s in enumerate(listed) if s[3] == disc)
        assert after > 0, (name, listed)
        before, first = listed[after - 1], listed[after]
        assert before[3] == disc - 1
        gap = first[0] - (before[0] + before[1])
        assert abs(gap) < 0.05, f"{name}: PDT grid broken by {gap:.3f} s at the switch"
        assert not pdt_check or abs(first[0] - pdt) < 0.05, (name, first[0], pdt)
        [segment] = [s for s in w.segments() if s.uri == first[2]]
        [previous] = [s for s in w.segments() if s.uri == before[2]]
        init, media = (
            await fetch(origin, name, segment.map_uri),
            await fetch(origin, name, first[2]),
        )
        new = frames(init, media)
        assert decode_segment(init, media)[1] > 0, f"{name}: no audio after the switch"
        before_frames = frames(
            await fetch(origin, name, previous.map_uri), await fetch(origin, name, before[2])
        )
        print(
            f"{name}: switch {disc}: PDT gap {gap * 1000:+.1f} ms,"
            f" {len(before_frames)} old + {len(new)} new frames"
        )
        assert new and new[0][0], f"{name}: no IDR at the switch frame"
        assert all((std < FLAT) == to_flat for _, std in new), (name, new[:5])
        if old:  # (not when the slate came in between)
            assert all((std < FLAT) != to_flat for _, std in before_frames), before_frames[-5:]


async def taken_over(
    watches: dict[str, PlaylistWatch], package: LivePackage, name: str, after: int
) -> tuple[int, bool]:
    """Once input ``name`` is on air after discontinuity ``after``: the discontinuity it
    follows and whether the slate covered in between; prints the listing gaps viewers see."""
    await until(lambda: package.input == name, 15, f"{name} on air")
    slate = package.slate_seconds > 0  # (the tests using this had no slate before)
    disc = after + (2 if slate else 1)
    # A warm input is on air before its first part is listed: wait for the listing.
    await until(
        lambda: all(w.discontinuity == disc for w in watches.values()), 5, "every rendition"
    )
    for rendition, w in watches.items():
        gaps = [w.switch_gap(d) for d in range(after + 1, disc + 1)]
        print(f"{rendition}: listing gaps at the take-over (via the slate: {slate}): {gaps}")
    return disc, slate


async def test_switch_between_two_cameras_on_every_rendition(origin: Origin) -> None:
    main = await publish(origin, await origin.key())
    closeup: asyncio.subprocess.Process | None = None
    try:
        status, created = await api(
            origin, "POST", "/api/v1/streams/demo/inputs", {"name": "closeup"}
        )
        assert status == 201, created
        assert created["rtmp_url"].endswith("/" + created["stream_key"])
        assert created["whip_url"].endswith("/whip/demo") and created["backup"] is False
        status, spare = await api(
            origin, "POST", "/api/v1/streams/demo/inputs", {"name": "spare", "backup": True}
        )
        assert status == 201 and spare["publishing"] is False
        status, body = await api(origin, "POST", "/api/v1/streams/demo/inputs", {"name": "main"})
        assert status == 422, body
        closeup = await publish(origin, created["stream_key"], SOLID)
        names = await ready_show(origin)
        assert sorted(names) == ["180p", "90p"]

        sessions = origin.server.streams
        await until(lambda: sessions.input_session("demo", "closeup") is not None, 10, "closeup")
        status, listed = await api(origin, "GET", "/api/v1/streams/demo/inputs")
        assert status == 200
        assert [(i["name"], i["publishing"], i["active"]) for i in listed["inputs"]] == [
            ("main", True, True),
            ("closeup", True, False),
            ("spare", False, False),
        ]
        # Refusals: unknown input, an input nobody publishes, a bad body.
        status, body = await api(origin, "POST", "/api/v1/streams/demo/switch", {"input": "nope"})
        assert status == 404, body
        status, body = await api(origin, "POST", "/api/v1/streams/demo/switch", {"input": "spare"})
        assert status == 409 and body["error"]["code"] == "not_publishing", body
        status, body = await api(origin, "POST", "/api/v1/streams/demo/switch", {"in": "x"})
        assert status == 422, body
        status, body = await api(origin, "POST", "/api/v1/streams/demo/switch", {"input": "main"})
        assert status == 200 and body["switched"] is False, body

        async with watching(origin, names) as watches:
            await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
            status, body = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": "closeup"}
            )
            assert status == 200 and body["switched"] and body["active_input"] == "closeup", body
            switched = datetime.fromisoformat(body["program_date_time"].replace("Z", "+00:00"))
            # A second switch at once is refused: the ladder cannot be made to thrash.
            status, refused = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": "main"}
            )
            assert status == 429 and refused["error"]["code"] == "rate_limited", refused
            _, stream = await api(origin, "GET", "/api/v1/streams/demo")
            assert stream["active_input"] == "closeup", stream
            await check_switch(origin, watches, 1, True, switched.timestamp())
            # A tag posted now lands on the closeup's frames: after the switch frame, on the
            # newest frame the closeup sent (not where main's held hub stands).
            status, tag = await api(
                origin, "POST", "/api/v1/streams/demo/tags", {"kind": "product", "product_id": "c1"}
            )
            assert status == 201, tag
            stamped = datetime.fromisoformat(tag["program_date_time"].replace("Z", "+00:00"))
            assert stamped > switched, (tag, body)
            closeup_session = sessions.input_session("demo", "closeup")
            assert closeup_session is not None
            assert abs(tag["pts"] - (closeup_session.stats.newest_pts_ms or 0)) < 300, tag

            # And back to the main camera.
            interval = origin.server.config.continuity.switch_interval
            await asyncio.sleep(interval)
            status, body = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": "main"}
            )
            assert status == 200 and body["switched"], body
            back = datetime.fromisoformat(body["program_date_time"].replace("Z", "+00:00"))
            await check_switch(origin, watches, 2, False, back.timestamp())
            status, body = await api(origin, "DELETE", "/api/v1/streams/demo/inputs/closeup")
            assert status == 204, body
        await asyncio.wait_for(closeup.wait(), 10)  # its publisher was disconnected
    finally:
        await stop_ffmpeg(main)
        if closeup is not None:
            await stop_ffmpeg(closeup)


async def test_input_keys_are_refused_once_deleted(origin: Origin, tmp_path: Path) -> None:
    status, created = await api(origin, "POST", "/api/v1/streams/demo/inputs", {"name": "cam2"})
    assert status == 201, created
    status, body = await api(origin, "DELETE", "/api/v1/streams/demo/inputs/cam2")
    assert status == 204, body
    status, body = await api(origin, "DELETE", "/api/v1/streams/demo/inputs/cam2")
    assert status == 404, body
    status, body = await api(origin, "DELETE", "/api/v1/streams/demo/inputs/main")
    assert status == 422, body
    # Publishing with the deleted key is refused (ffmpeg exits with an error at once).
    proc = await publish(origin, created["stream_key"])
    assert await asyncio.wait_for(proc.wait(), 20) != 0
    # No show on: the switch is refused as offline before the input is looked at.
    status, body = await api(origin, "POST", "/api/v1/streams/demo/switch", {"input": "cam2"})
    assert status == 409 and body["error"]["code"] == "offline", body


async def test_switch_to_a_whip_camera(tmp_path: Path, receiver: Receiver) -> None:
    """A WHIP input (browser-like: H.264 + Opus) takes over from an RTMP main at once: keyframes
    are asked for, not waited for."""
    whip = WhipSection(host_addresses=("127.0.0.1",))
    async with serving(tmp_path, receiver.url, 5.0, whip=whip) as origin:
        # Mono AAC passed through on main; the phone's Opus is encoded into the same format.
        main = await publish(origin, await origin.key(), SOLID)
        try:
            status, created = await api(
                origin, "POST", "/api/v1/streams/demo/inputs", {"name": "phone"}
            )
            assert status == 201, created
            names = await ready_show(origin)
            async with aiohttp.ClientSession() as http:
                phone = await whip_publish(
                    http, origin.http, "demo", created["stream_key"], size=(180, 320)
                )
                try:
                    streams = origin.server.streams
                    await until(
                        lambda: (
                            (s := streams.input_session("demo", "phone")) is not None
                            and s.stats.video_frames > 10
                        ),
                        15,
                        "the phone's media",
                    )
                    async with watching(origin, names) as watches:
                        asked = time.monotonic()
                        status, body = await api(
                            origin, "POST", "/api/v1/streams/demo/switch", {"input": "phone"}
                        )
                        took = time.monotonic() - asked
                        print(f"WHIP switch answered in {took:.2f} s: {body}")
                        assert status == 200 and body["switched"], body
                        switched = datetime.fromisoformat(
                            body["program_date_time"].replace("Z", "+00:00")
                        )
                        await check_switch(origin, watches, 1, False, switched.timestamp())
                finally:
                    await phone.pc.close()
        finally:
            await stop_ffmpeg(main)


async def test_cold_backup_takeover_via_the_slate_keeps_the_pdt_grid(
    tmp_path: Path, receiver: Receiver
) -> None:
    """``warm_standby = "off"``: main killed, the slate covers until the backup's next keyframe;
    on every rendition the PDT grid runs on part by part across both discontinuities (live →
    slate → backup), no step of a frame anywhere."""
    async with serving(tmp_path, receiver.url, 5.0, warm_standby="off") as origin:
        main = await publish(origin, await origin.key())
        status, created = await api(
            origin, "POST", "/api/v1/streams/demo/inputs", {"name": "spare", "backup": True}
        )
        assert status == 201, created
        spare = await publish(origin, created["stream_key"], SOLID)
        try:
            names = await ready_show(origin)
            streams = origin.server.streams
            await until(lambda: streams.input_session("demo", "spare") is not None, 10, "spare")
            package = origin.server.pipelines.package("demo")
            assert package is not None
            async with watching(origin, names) as watches:
                await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
                main.send_signal(signal.SIGKILL)
                await main.wait()
                disc, slate = await taken_over(watches, package, "spare", 0)
                assert slate and disc == 2, (disc, slate)
                listed = {name: w.text for name, w in watches.items()}
                for name, text in listed.items():
                    assert {d for *_, d in timed_parts(text)} == {0, 1, 2}, (name, text)
                assert_pdt_grid(listed, 1 / 30)
                await check_switch(origin, watches, disc, True, 0.0, pdt_check=False, old=False)
        finally:
            await stop_ffmpeg(main)
            await stop_ffmpeg(spare)


async def test_whip_backup_is_held_warm_and_covers_a_killed_main(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A WHIP backup is held warm too (asked for the keyframe its standby starts at): main
    killed, it is on air at its next frame with no slate in between, an IDR on every rendition
    there, the PDT grid continuous part by part."""
    whip = WhipSection(host_addresses=("127.0.0.1",))
    async with serving(tmp_path, receiver.url, 5.0, whip=whip) as origin:
        main = await publish(origin, await origin.key(), SOLID)
        try:
            status, created = await api(
                origin, "POST", "/api/v1/streams/demo/inputs", {"name": "phone", "backup": True}
            )
            assert status == 201, created
            names = await ready_show(origin)
            package = origin.server.pipelines.package("demo")
            assert package is not None
            async with aiohttp.ClientSession() as http:
                phone = await whip_publish(
                    http, origin.http, "demo", created["stream_key"], size=(180, 320)
                )
                try:
                    pipelines = origin.server.pipelines
                    await until(lambda: pipelines.warm("demo", "phone"), 15, "the phone warm")
                    async with watching(origin, names) as watches:
                        await until(
                            lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts"
                        )
                        main.send_signal(signal.SIGKILL)
                        await main.wait()
                        disc, slate = await taken_over(watches, package, "phone", 0)
                        assert not slate, "the warm WHIP backup was not on air before the slate"
                        listed = {name: w.text for name, w in watches.items()}
                        await check_switch(origin, watches, disc, False, 0.0, pdt_check=False)
                        assert_pdt_grid(listed, 1 / 30)
                finally:
                    await phone.pc.close()
        finally:
            await stop_ffmpeg(main)


async def test_camera_of_another_size_switches_with_its_own_init(origin: Origin) -> None:
    """A 360×640 camera feeds the 180×320 show's ladder re-encoded: the 180p rung (passthrough of
    main) goes on under an init of its own (EXT-X-MAP), every rendition at its own size."""
    main = await publish(origin, await origin.key())
    status, created = await api(origin, "POST", "/api/v1/streams/demo/inputs", {"name": "big"})
    assert status == 201, created
    big = await start_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(created["stream_key"]), seconds=120, realtime=True, size="360x640"
        )
    )
    try:
        names = await ready_show(origin)
        streams = origin.server.streams
        await until(lambda: streams.input_session("demo", "big") is not None, 10, "the input")
        async with watching(origin, names) as watches:
            await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
            status, body = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": "big"}
            )
            assert status == 200 and body["switched"], body
            await until(
                lambda: all(
                    [s for s in w.segments() if s.discontinuity == 1] for w in watches.values()
                ),
                20,
                "a segment of the new camera",
            )
            package = origin.server.pipelines.package("demo")
            assert package is not None
            for name, w in watches.items():
                info = package.renditions[name].info
                segment = next(s for s in w.segments() if s.discontinuity == 1)
                # Main's passthrough bitstream is not the re-encoded one: a new init for it.
                assert segment.map_uri.startswith("input-") == info.passthrough, segment
                sizes, audio = decode_segment(
                    await fetch(origin, name, segment.map_uri),
                    await fetch(origin, name, segment.uri),
                )
                assert sizes and set(sizes) == {(info.width, info.height)}, (name, sizes[:3])
                assert audio > 0
    finally:
        await stop_ffmpeg(main)
        await stop_ffmpeg(big)


async def test_input_without_audio_is_refused_clearly(origin: Origin) -> None:
    """A camera without audio cannot take over a show with audio: a clear 409, the show goes
    on from main."""
    main = await publish(origin, await origin.key())
    status, created = await api(origin, "POST", "/api/v1/streams/demo/inputs", {"name": "mute"})
    assert status == 201, created
    mute = await start_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(created["stream_key"]), seconds=120, realtime=True, audio=False
        )
    )
    try:
        await ready_show(origin)
        streams = origin.server.streams
        await until(lambda: streams.input_session("demo", "mute") is not None, 10, "the input")
        status, body = await api(origin, "POST", "/api/v1/streams/demo/switch", {"input": "mute"})
        assert status == 409 and body["error"]["code"] == "incompatible_input", body
        assert "no audio" in body["error"]["message"], body
        _, stream = await api(origin, "GET", "/api/v1/streams/demo")
        assert stream["active_input"] == "main" and stream["state"] == "live", stream
    finally:
        await stop_ffmpeg(main)
        await stop_ffmpeg(mute)


async def test_camera_that_drops_falls_back_to_main(origin: Origin) -> None:
    """The camera on air is killed while main still publishes: main takes over at its next
    keyframe (the slate covers until then); main killed next: the slate."""
    main = await publish(origin, await origin.key())
    status, created = await api(origin, "POST", "/api/v1/streams/demo/inputs", {"name": "cam"})
    assert status == 201, created
    cam = await publish(origin, created["stream_key"], SOLID)
    try:
        names = await ready_show(origin)
        streams = origin.server.streams
        await until(lambda: streams.input_session("demo", "cam") is not None, 10, "the camera")
        async with watching(origin, names) as watches:
            status, body = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": "cam"}
            )
            assert status == 200 and body["switched"], body
            await until(lambda: all(w.discontinuity == 1 for w in watches.values()), 10, "cam")
            await asyncio.sleep(1)
            cam.send_signal(signal.SIGKILL)
            await cam.wait()
            package = origin.server.pipelines.package("demo")
            assert package is not None
            disc, slate = await taken_over(watches, package, "main", 1)
            await check_switch(origin, watches, disc, False, 0.0, pdt_check=False, old=not slate)
            _, stream = await api(origin, "GET", "/api/v1/streams/demo")
            assert stream["active_input"] == "main", stream
            main.send_signal(signal.SIGKILL)
            await main.wait()
            await until(lambda: package.active_input == "slate", 10, "the slate")
    finally:
        await stop_ffmpeg(main)
        await stop_ffmpeg(cam)


async def watch_keyframes(origin: Origin, name: str, seen: list[float]) -> None:
    """Append the time each video keyframe of input ``name`` reaches ingest to ``seen``."""
    session = None
    while session is None:
        session = origin.server.streams.input_session("demo", name)
        await asyncio.sleep(0.02)
    reader = session.hub.add_reader("test-keyframes")
    while (unit := await reader.get()) is not None:
        if unit.kind is MediaKind.VIDEO and unit.keyframe and not unit.is_config:
            seen.append(time.monotonic())


async def test_warm_camera_switches_at_its_next_frame(tmp_path: Path, receiver: Receiver) -> None:
    """``warm_standby = "all"``: a held RTMP camera is decoded ahead, so a switch lands at its
    next frame, not its next keyframe (its source GOP is 5 s: the switch is answered and its
    first part listed before that keyframe comes), an IDR on every rendition there; the camera
    on air before is then held warm in turn, and the switch back lands at once too."""
    async with serving(tmp_path, receiver.url, 5.0, warm_standby="all") as origin:
        main = await publish(origin, await origin.key())
        status, created = await api(
            origin, "POST", "/api/v1/streams/demo/inputs", {"name": "closeup"}
        )
        assert status == 201, created
        closeup = await publish(origin, created["stream_key"], SOLID, gop=150)
        keyframes: list[float] = []
        watcher = asyncio.create_task(watch_keyframes(origin, "closeup", keyframes))
        try:
            names = await ready_show(origin)
            pipelines = origin.server.pipelines
            await until(lambda: pipelines.warm("demo", "closeup"), 15, "the closeup decoded ahead")
            async with watching(origin, names) as watches:
                await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
                asked = time.monotonic()
                status, body = await api(
                    origin, "POST", "/api/v1/streams/demo/switch", {"input": "closeup"}
                )
                assert status == 200 and body["switched"], body
                switched = datetime.fromisoformat(body["program_date_time"].replace("Z", "+00:00"))
                await until(lambda: all(w.discontinuity == 1 for w in watches.values()), 5, "it")
                assert keyframes and not [t for t in keyframes if t > asked], (
                    "the closeup's first part came after a source keyframe of it"
                )
                await check_switch(origin, watches, 1, True, switched.timestamp())

                # Main is held warm now: back at its next frame too.
                await until(lambda: pipelines.warm("demo", "main"), 10, "main decoded ahead")
                interval = origin.server.config.continuity.switch_interval
                await asyncio.sleep(interval)
                status, body = await api(
                    origin, "POST", "/api/v1/streams/demo/switch", {"input": "main"}
                )
                assert status == 200 and body["switched"], body
                back = datetime.fromisoformat(body["program_date_time"].replace("Z", "+00:00"))
                await check_switch(origin, watches, 2, False, back.timestamp())
        finally:
            watcher.cancel()
            await stop_ffmpeg(main)
            await stop_ffmpeg(closeup)


def timed_parts(text: str) -> list[tuple[float, float, str, int]]:
    """(PDT, duration, URI, discontinuity number) of every listed part: a segment's parts run
    from its PROGRAM-DATE-TIME on, each starting where the one before ends."""
    out = []
    disc, at = 0, 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            disc = int(line.split(":")[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc += 1
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            stamp = line.split(":", 1)[1].replace("Z", "+00:00")
            at = datetime.fromisoformat(stamp).timestamp()
        elif line.startswith("#EXT-X-PART:"):
            fields = dict(f.split("=", 1) for f in line[12:].split(","))
            duration = float(fields["DURATION"])
            out.append((at, duration, fields["URI"].strip('"'), disc))
            at += duration
    return out


def assert_pdt_grid(playlists: dict[str, str], frame: float, across: bool = True) -> None:
    """In every rendition's playlist each listed part starts where the one before ends (PDT +
    duration = next PDT within half a frame), across every DISCONTINUITY listed (``across``:
    there must be one among the listed parts)."""
    for name, text in playlists.items():
        parts = timed_parts(text)
        assert len(parts) > 1, f"{name}: too few parts listed"
        assert not across or len({d for *_, d in parts}) > 1, f"{name}: no discontinuity listed"
        for (pdt, duration, uri, disc), (next_pdt, _, next_uri, next_disc) in pairwise(parts):
            step = next_pdt - (pdt + duration)
            assert abs(step) < frame / 2, (
                f"{name}: PDT steps {step * 1000:+.1f} ms from {uri} (discontinuity {disc}) to "
                f"{next_uri} (discontinuity {next_disc})"
            )


async def test_backup_takes_over_from_a_killed_main_and_hands_back(origin: Origin) -> None:
    """Main killed: the warm backup encoder takes over at its next frame, not waiting for its
    next keyframe (its source GOP is 5 s: its first part is listed before that keyframe comes,
    yet an IDR opens it on every rung), before any slate; the PDT grid runs on across the
    takeover part by part; main back: the show returns to main at main's first keyframe."""
    main = await publish(origin, await origin.key())
    status, created = await api(
        origin, "POST", "/api/v1/streams/demo/inputs", {"name": "spare", "backup": True}
    )
    assert status == 201 and created["backup"] is True, created
    spare = await publish(origin, created["stream_key"], SOLID, gop=150)
    source_keyframes: list[float] = []  # when the backup's source keyframes reached ingest
    watcher = asyncio.create_task(watch_keyframes(origin, "spare", source_keyframes))
    try:
        names = await ready_show(origin)
        streams = origin.server.streams
        await until(lambda: streams.input_session("demo", "spare") is not None, 10, "the backup")
        package = origin.server.pipelines.package("demo")
        assert package is not None
        pipelines = origin.server.pipelines
        await until(lambda: pipelines.warm("demo", "spare"), 15, "the backup decoded ahead")
        async with watching(origin, names) as watches:
            await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
            main.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await main.wait()
            disc, slate = await taken_over(watches, package, "spare", 0)
            assert not slate, "the warm backup was not on air before the slate"
            assert source_keyframes and not [t for t in source_keyframes if t > killed], (
                "the backup's first part came after a source keyframe of it: no warm takeover"
            )
            listed = {name: w.text for name, w in watches.items()}
            await check_switch(origin, watches, disc, True, 0.0, pdt_check=False)
            assert_pdt_grid(listed, 1 / 30)
            _, stream = await api(origin, "GET", "/api/v1/streams/demo")
            assert stream["active_input"] == "spare", stream

            main = await publish(origin, await origin.key())
            await until(lambda: package.input == "main", 20, "main back on air")
            await check_switch(origin, watches, disc + 1, False, 0.0, pdt_check=False)
        # Held again, the backup is decoded ahead again; once main ends the show on purpose
        # (a clean unpublish: ENDLIST after the reconnect window), it no longer is.
        await until(lambda: pipelines.warm("demo", "spare"), 15, "the backup warm again")
        main.send_signal(signal.SIGINT)
        await main.wait()
        await until(lambda: package.ended, 15, "ENDLIST")
        standby = pipelines.pipelines["demo"].standby
        await until(lambda: not standby, 10, "the standby stopped with the show")
        assert streams.input_session("demo", "spare") is not None  # still publishing
    finally:
        watcher.cancel()
        await stop_ffmpeg(main)
        await stop_ffmpeg(spare)


async def test_backup_stays_on_air_when_told_to(tmp_path: Path, receiver: Receiver) -> None:
    """``backup_return = "stay"``: main killed, the backup takes over; main publishing again
    does not take the show back until someone switches to it."""
    async with serving(tmp_path, receiver.url, 5.0, backup_return="stay") as origin:
        main = await publish(origin, await origin.key())
        status, created = await api(
            origin, "POST", "/api/v1/streams/demo/inputs", {"name": "spare", "backup": True}
        )
        assert status == 201, created
        spare = await publish(origin, created["stream_key"], SOLID)
        try:
            await ready_show(origin)
            streams = origin.server.streams
            await until(lambda: streams.input_session("demo", "spare") is not None, 10, "spare")
            package = origin.server.pipelines.package("demo")
            assert package is not None
            main.send_signal(signal.SIGKILL)
            await main.wait()
            await until(lambda: package.input == "spare", 15, "the backup on air")
            main = await publish(origin, await origin.key())
            await until(lambda: streams.input_session("demo", "main") is not None, 10, "main back")
            await asyncio.sleep(8)  # with "main", the show is back on main well within this
            assert package.input == "spare", package.input
            status, body = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": "main"}
            )
            assert status == 200, body
            await until(lambda: package.input == "main", 15, "main on air after the switch")
        finally:
            await stop_ffmpeg(main)
            await stop_ffmpeg(spare)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")
@pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not installed (npm install)")
async def test_hlsjs_plays_through_three_switches(origin: Origin, browser: Any) -> None:
    """hls.js on the shop page keeps playing, with no fatal error, through three switches."""
    main = await publish(origin, await origin.key())
    status, created = await api(origin, "POST", "/api/v1/streams/demo/inputs", {"name": "cam"})
    assert status == 201, created
    cam = await publish(origin, created["stream_key"], SOLID)
    try:
        await ready_show(origin)
        streams = origin.server.streams
        await until(
            lambda: (
                (s := streams.input_session("demo", "cam")) is not None and s.stats.gop is not None
            ),
            15,
            "the camera",
        )
        page = await browser.new_page()
        await page.goto(f"{origin.http}/demo/demo")
        await page.wait_for_function(
            "document.getElementById('video').currentTime > 1", timeout=30_000
        )
        interval = origin.server.config.continuity.switch_interval
        for target in ("cam", "main", "cam"):
            status, body = await api(
                origin, "POST", "/api/v1/streams/demo/switch", {"input": target}
            )
            assert status == 200 and body["switched"], body
            await advancing(page, max(interval, 3.0))
    finally:
        await stop_ffmpeg(main)
        await stop_ffmpeg(cam)


async def test_flapping_main_cannot_thrash_the_ladder(origin: Origin) -> None:
    """Main connects and dies every second while a backup publishes: switches stay at most
    about two per switch interval (a cover and a switch back), the show never ends and every
    rendition keeps listing parts."""
    main = await publish(origin, await origin.key())
    status, created = await api(
        origin, "POST", "/api/v1/streams/demo/inputs", {"name": "spare", "backup": True}
    )
    assert status == 201, created
    spare = await publish(origin, created["stream_key"], SOLID)
    try:
        names = await ready_show(origin)
        streams = origin.server.streams
        await until(lambda: streams.input_session("demo", "spare") is not None, 10, "the backup")
        async with watching(origin, names) as watches:
            await until(lambda: all(len(w.parts) >= 3 for w in watches.values()), 20, "parts")
            started = time.monotonic()
            for _ in range(FLAPS):
                await asyncio.sleep(1)
                main.send_signal(signal.SIGKILL)
                await main.wait()
                main = await publish(origin, await origin.key())
            flapped = time.monotonic() - started
            parts = {n: len(w.parts) for n, w in watches.items()}
            await asyncio.sleep(2)
            package = origin.server.pipelines.package("demo")
            assert package is not None and not package.ended
            for name, w in watches.items():
                assert len(w.parts) > parts[name], f"{name} stopped listing parts"
                assert not w.ended
                # Each switch and each slate stretch is one discontinuity. A flap costs at most
                # two: out (slate or backup) and back when main returns before the backup is
                # cued (a reconnect, as without inputs); the switch back from a backup waits for
                # the switch interval, which a main living 1 s never reaches. Switching on every
                # flap (slate, backup, main) would make three per flap.
                limit = 2 * FLAPS + 2
                print(f"{name}: {w.discontinuity} discontinuities in {flapped:.1f} s of flapping")
                assert w.discontinuity <= limit, (name, w.discontinuity, limit)
    finally:
        await stop_ffmpeg(main)
        await stop_ffmpeg(spare)
