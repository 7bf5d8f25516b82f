import asyncio

from ingest.hub import StreamHub
from ingest.media import MILLISECONDS, MediaKind, MediaUnit


def video(i: int, key: bool = False) -> MediaUnit:
    return MediaUnit(MediaKind.VIDEO, "h264", i * 33, i * 33, MILLISECONDS, key, b"x", 0.0)


def config() -> MediaUnit:
    return MediaUnit(MediaKind.VIDEO, "h264", 0, 0, MILLISECONDS, True, b"avcc", 0.0, True)


async def test_fan_out_in_order_and_end() -> None:
    hub = StreamHub("s")
    a, b = hub.add_reader("a"), hub.add_reader("b")
    units = [config()] + [video(i, i % 10 == 0) for i in range(30)]
    for u in units:
        hub.publish(u)
    hub.end()
    got_a = [u async for u in a]
    got_b = [u async for u in b]
    assert got_a == units and got_b == units
    assert await a.get() is None


async def test_slow_reader_drops_counted_and_resumes_at_keyframe() -> None:
    hub = StreamHub("s")
    slow = hub.add_reader("slow", maxsize=5)
    fast = hub.add_reader("fast", maxsize=1000)
    for i in range(40):
        hub.publish(video(i, key=i % 10 == 0))  # never blocks
    assert slow.stats.dropped > 0
    assert fast.stats.dropped == 0
    got = []
    while (u := slow.get_nowait()) is not None:
        got.append(u)
    assert [u.dts for u in got] == [i * 33 for i in range(5)]
    hub.publish(video(40))  # not a keyframe: still skipped after the drop
    hub.publish(video(41, key=True))
    hub.publish(video(42))
    assert [u.dts // 33 for u in (slow.get_nowait(), slow.get_nowait())] == [41, 42]
    assert slow.stats.dropped == 40 - 5 + 1
    assert hub.dropped == slow.stats.dropped


async def test_late_reader_gets_config_then_waits_for_keyframe() -> None:
    hub = StreamHub("s")
    hub.publish(config())
    hub.publish(video(0, key=True))
    hub.publish(video(1))
    late = hub.add_reader("late")
    hub.publish(video(2))
    hub.publish(video(3, key=True))
    first = await late.get()
    assert first is not None and first.is_config
    nxt = await late.get()
    assert nxt is not None and nxt.dts == 99 and nxt.keyframe


async def test_get_waits_for_publish() -> None:
    hub = StreamHub("s")
    r = hub.add_reader("r")
    task = asyncio.ensure_future(r.get())
    await asyncio.sleep(0.01)
    assert not task.done()
    hub.publish(video(0, key=True))
    assert (await asyncio.wait_for(task, 1)).dts == 0


async def test_reader_ended_at_a_keyframe_meets_one_attached_now() -> None:
    """The old reader ends just before the next keyframe; a reader attached at the same moment
    starts with it: together they carry every unit once."""
    hub = StreamHub("s")
    hub.publish(config())
    old = hub.add_reader("old")
    for i in range(5):
        hub.publish(video(i, key=i == 0))
    new = hub.add_reader("new")
    old.end_at_keyframe()
    for i in range(5, 12):
        hub.publish(video(i, key=i == 8))
    got_old = [u.dts // 33 for u in [u async for u in old] if not u.is_config]
    old.close()
    hub.end()
    got_new = [u.dts // 33 for u in [u async for u in new] if not u.is_config]
    assert got_old == list(range(8)) and got_new == list(range(8, 12))
    assert old not in list(hub.readers)
