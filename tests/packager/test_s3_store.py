"""S3Store against a real S3-compatible server (rclone serve s3) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from benchmarks.harness.s3_server import S3Server
from packager.stores import RecordingStore, StoreUnavailable, check_key
from packager.stores.s3 import MAX_ERROR_LENGTH, S3Store, describe_error
from shopcast.config import ConfigError, load_config
from shopcast.metrics import ShopcastMetrics

SEGMENT = "video/iso.segment"


def spooled_files(spool: Path) -> dict[str, bytes]:
    return {
        p.relative_to(spool).as_posix(): p.read_bytes() for p in spool.rglob("*") if p.is_file()
    }


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@pytest.fixture
async def open_store(tmp_path: Path, s3_server: S3Server) -> AsyncIterator[Callable[..., S3Store]]:
    """Started stores on the test server (fast retries), closed after the test."""
    stores: list[S3Store] = []

    def make(**overrides: object) -> S3Store:
        kwargs: dict[str, object] = {
            **s3_server.store_kwargs(),
            "prefix": "shows",
            "spool_dir": tmp_path / "spool",
            "retry_base": 0.05,
            "retry_cap": 0.3,
            "close_timeout": 2.0,
            "connect_timeout": 1.0,
            "read_timeout": 5.0,
        }
        kwargs.update(overrides)
        store = S3Store(**kwargs)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def test_is_a_recording_store() -> None:
    store: RecordingStore = S3Store(
        endpoint=None, bucket="b", region="r", access_key=None, secret_key=None, spool_dir=Path()
    )
    assert store.name == "s3"


async def test_round_trip_lands_in_the_bucket(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    store = open_store()
    await store.start()
    files = {
        "rec1/720p/init.mp4": b"init" * 100,
        "rec1/720p/1.m4s": os.urandom(300_000),
        "rec1/manifest.json": b'{"v": 1}',
        "rec2/720p/1.m4s": b"other recording",
    }
    for key, data in files.items():
        await store.put(key, data, SEGMENT)
    # Readable at once, whether still spooled or already uploaded.
    for key, data in files.items():
        assert await store.get(key) == data
    await store.put("rec1/manifest.json", b'{"v": 2}', "application/json")
    files["rec1/manifest.json"] = b'{"v": 2}'

    await until(lambda: store.health().pending == 0)
    assert spooled_files(tmp_path / "spool") == {}
    assert await s3_server.objects() == {f"shows/{k}": v for k, v in files.items()}
    assert store.health().failed == 0 and store.health().last_error is None
    assert store.stats.uploaded >= len(files)

    # Now served from the bucket.
    assert await store.get("rec1/720p/1.m4s") == files["rec1/720p/1.m4s"]
    assert await store.get("rec1/720p/2.m4s") is None
    assert await store.list("rec1/") == sorted(k for k in files if k.startswith("rec1/"))

    assert await store.delete_prefix("rec1/") == 3
    assert await store.list("rec1/") == []
    assert await store.get("rec1/manifest.json") is None
    assert await s3_server.objects() == {"shows/rec2/720p/1.m4s": b"other recording"}


async def test_rewrites_while_uploading_keep_the_last_version(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    store = open_store(workers=3)
    await store.start()

    async def manifest_writer() -> None:
        for version in range(100):
            await store.put("rec/manifest.json", b"v%d" % version, "application/json")
            await asyncio.sleep(0.003 * (version % 3))

    async def segment_writer() -> None:
        for n in range(30):
            await store.put(f"rec/v/{n}.m4s", os.urandom(50_000 + n), SEGMENT)

    await asyncio.gather(manifest_writer(), segment_writer())
    await until(lambda: store.health().pending == 0)
    objects = await s3_server.objects()
    assert objects["shows/rec/manifest.json"] == b"v99"
    assert len(objects) == 31 and spooled_files(tmp_path / "spool") == {}


async def test_vanished_spool_file_is_reported_not_retried_forever(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    s3_server.stop()
    store = open_store()
    await store.start()
    await store.put("rec/v/1.m4s", b"gone soon", SEGMENT)
    (tmp_path / "spool" / "rec" / "v" / "1.m4s").unlink()
    await until(lambda: store.health().pending == 0)
    assert "spool file of rec/v/1.m4s unreadable" in (store.health().last_error or "")


async def test_server_killed_mid_upload_then_back(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    store = open_store()
    await store.start()
    await store.put("rec/v/init.mp4", b"init", "video/mp4")
    await until(lambda: store.health().pending == 0)

    # Big segments so the kill lands while uploads are in flight.
    segments = {f"rec/v/{n}.m4s": os.urandom(2_000_000) for n in range(1, 5)}
    for key, data in list(segments.items())[:2]:
        await store.put(key, data, SEGMENT)
    s3_server.kill()
    for key, data in list(segments.items())[2:]:
        await store.put(key, data, SEGMENT)  # accepted: spooled

    await until(lambda: store.health().failed > 0)
    health = store.health()
    assert health.last_error and len(health.last_error) <= MAX_ERROR_LENGTH
    assert health.pending >= 2
    await asyncio.sleep(0.5)  # several retry rounds against the dead server
    spool = spooled_files(tmp_path / "spool")
    uploaded_before_kill = {k for k in segments if k not in spool}
    for key in segments.keys() - uploaded_before_kill:
        assert spool[key] == segments[key]  # nothing deleted locally before confirmation
    assert await store.get("rec/v/4.m4s") == segments["rec/v/4.m4s"]  # from the spool
    with pytest.raises(StoreUnavailable, match="S3 list"):
        await store.list("rec/")

    s3_server.start()
    await until(lambda: store.health().pending == 0)
    assert spooled_files(tmp_path / "spool") == {}
    assert store.health().last_error is None
    objects = await s3_server.objects("shows/rec/")
    assert objects == {"shows/rec/v/init.mp4": b"init"} | {
        f"shows/{k}": v for k, v in segments.items()
    }


async def test_restart_with_spool_left_uploads_it(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    s3_server.stop()
    first = open_store(close_timeout=0.3)
    await first.start()
    assert first.health().last_error  # head_bucket failed: says why
    data = {f"rec/v/{n}.m4s": f"segment {n}".encode() for n in range(5)}
    for key, payload in data.items():
        await first.put(key, payload, SEGMENT)
    await first.close()  # bounded wait, then gives up: the files stay
    assert spooled_files(tmp_path / "spool") == data
    half_written = tmp_path / "spool" / "rec" / "v" / ".5.m4s.0badf00d.tmp"
    half_written.write_bytes(b"torn")

    s3_server.start()
    second = open_store()
    await second.start()
    assert not half_written.exists()
    assert second.health().pending == len(data)
    await until(lambda: second.health().pending == 0)
    assert spooled_files(tmp_path / "spool") == {}
    assert await s3_server.objects() == {f"shows/{k}": v for k, v in data.items()}


async def test_full_queue_refuses_with_reason(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    s3_server.stop()
    store = open_store(queue_size=3)
    metrics = ShopcastMetrics()
    metrics.watch_store(store)
    await store.start()
    for n in range(3):
        await store.put(f"rec/v/{n}.m4s", b"x", SEGMENT)
    with pytest.raises(StoreUnavailable, match=r"queue full \(3 pending\); last error: \S+"):
        await store.put("rec/v/3.m4s", b"x", SEGMENT)
    await store.put("rec/v/0.m4s", b"newer", SEGMENT)  # a pending key takes no new slot
    assert store.health().pending == 3
    await until(lambda: store.health().failed >= 3)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"store": "s3"})

    assert sample("shopcast_record_store_pending") == 3
    assert (sample("shopcast_record_store_failures_total") or 0) >= 3
    assert sample("shopcast_record_store_degraded") == 1
    assert sorted(spooled_files(tmp_path / "spool")) == [f"rec/v/{n}.m4s" for n in range(3)]

    s3_server.start()
    await until(lambda: store.health().pending == 0)
    assert sample("shopcast_record_store_pending") == 0
    assert sample("shopcast_record_store_degraded") == 0
    await store.put("rec/v/3.m4s", b"x", SEGMENT)  # room again
    await until(lambda: store.health().pending == 0)
    objects = await s3_server.objects()
    assert len(objects) == 4 and objects["shows/rec/v/0.m4s"] == b"newer"


async def test_full_spool_disk_refuses_with_reason(s3_server: S3Server, tiny_disk: Path) -> None:
    s3_server.stop()
    store = S3Store(**s3_server.store_kwargs(), spool_dir=tiny_disk, close_timeout=0.2)
    await store.start()
    try:
        await store.put("rec/v/1.m4s", b"x" * 100_000, SEGMENT)
        with pytest.raises(StoreUnavailable, match=r"S3 spool: disk full \(writing rec/v/\d"):
            for n in range(2, 6):
                await store.put(f"rec/v/{n}.m4s", b"x" * 100_000, SEGMENT)
        health = store.health()
        assert health.last_error and "disk full" in health.last_error
        assert health.pending == len(spooled_files(tiny_disk))  # the refused one holds no slot
        assert await store.get("rec/v/1.m4s") == b"x" * 100_000
    finally:
        await store.close()


async def test_delete_drops_pending_uploads(
    open_store: Callable[..., S3Store], s3_server: S3Server, tmp_path: Path
) -> None:
    store = open_store()
    await store.start()
    await store.put("rec/v/1.m4s", b"uploaded", SEGMENT)
    await until(lambda: store.health().pending == 0)
    s3_server.kill()
    await store.put("rec/v/2.m4s", b"pending", SEGMENT)
    with pytest.raises(StoreUnavailable, match="S3 list"):
        await store.delete_prefix("rec/")
    assert spooled_files(tmp_path / "spool") == {}  # the local copy went at once
    assert store.health().pending == 0
    s3_server.start()
    assert await store.delete_prefix("rec/") == 1
    assert await s3_server.objects() == {}


async def test_credentials_and_endpoint_from_environment(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    store = S3Store(
        endpoint=None,
        bucket=s3_server.bucket,
        region=None,
        access_key=None,
        secret_key=None,
        spool_dir=tmp_path / "spool",
    )
    assert store.region == "eu-west-3"
    await store.start()
    try:
        await store.put("clips/c1.mp4", b"clip", "video/mp4")
        await until(lambda: store.health().pending == 0)
        assert await s3_server.objects() == {"clips/c1.mp4": b"clip"}
    finally:
        await store.close()


async def test_wrong_secret_is_reported(open_store: Callable[..., S3Store], tmp_path: Path) -> None:
    store = open_store(secret_key="not-the-secret")
    await store.start()
    await store.put("rec/v/1.m4s", b"kept", SEGMENT)
    await until(lambda: store.health().failed > 0)
    assert "SignatureDoesNotMatch" in (store.health().last_error or "")
    assert spooled_files(tmp_path / "spool") == {"rec/v/1.m4s": b"kept"}


def test_keys_are_checked() -> None:
    for key in ("rec/v/1.m4s", "clips/abc_DEF-1.mp4", "manifest.json"):
        assert check_key(key) == key
    bad = ("", "/abs", "a/../b", "a//b", ".hidden", "a/.tmp", "a b", "a\\b", "x" * 600, "a\n")
    for key in bad:
        with pytest.raises(ValueError):
            check_key(key)


def test_errors_are_cut_short() -> None:
    error = ClientError(
        {"Error": {"Code": "InternalError", "Message": "boom\r\n" + "A" * 5000}}, "PutObject"
    )
    text = describe_error(error)
    assert text.startswith("InternalError: boom  AAA") and text.isprintable()
    assert len(text) == MAX_ERROR_LENGTH and text.endswith("…")


async def test_from_settings_uses_the_record_section(s3_server: S3Server, tmp_path: Path) -> None:
    settings = SimpleNamespace(
        path=str(tmp_path / "recordings"),
        queue_size=64,  # the recorder's, in memory
        s3_spool_files=7,
        s3_endpoint=s3_server.endpoint,
        s3_bucket=s3_server.bucket,
        s3_region="",
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_prefix="/tenant-a/",
    )
    store = S3Store.from_settings(settings)
    assert store.queue_size == 7 and store.prefix == "tenant-a/"
    assert store.spool_dir == tmp_path / "recordings" / "s3-spool"
    await store.start()
    try:
        await store.put("rec/manifest.json", b"{}", "application/json")
        await until(lambda: store.health().pending == 0)
        assert await s3_server.objects() == {"tenant-a/rec/manifest.json": b"{}"}
    finally:
        await store.close()


def test_config_wants_a_bucket_for_s3() -> None:
    with pytest.raises(ConfigError, match="s3_bucket is required"):
        load_config(None, env={"SHOPCAST_RECORD_STORE": "s3"})
    record = load_config(
        None, env={"SHOPCAST_RECORD_STORE": "s3", "SHOPCAST_RECORD_S3_BUCKET": "shows"}
    ).record
    assert record.s3_bucket == "shows" and record.s3_spool_files == 4096
