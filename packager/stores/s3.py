"""Recordings in an S3-compatible object store, spooled locally first so uploads never block media.

``put`` writes the bytes atomically under ``spool_dir`` (off the loop) and queues the key; a pool of
upload workers sends it with exponential backoff and jitter until the store confirms it, and only
then removes the spool file. A restart re-queues whatever the spool still holds. The queue is
bounded by the number of pending keys: when it is full ``put`` raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from ingest.shown import shown
from packager.stores import Blob, StoreHealth, StoreSettings, StoreUnavailable, check_key
from packager.stores.local import FileStore

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

#: The spool's folder under ``[record] path``: apart from a file store's recordings there.
SPOOL_FOLDER = "s3-spool"
#: S3 error text is the server's: cut short before it reaches logs and the API.
MAX_ERROR_LENGTH = 200
#: DeleteObjects takes at most 1,000 keys per request (S3 API reference).
DELETE_BATCH = 1000
Keys = list[str]  # a name of its own: ``list`` is a method of the store
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
#: Content types of the recorder's files, for spool files re-queued after a restart.
_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".json": "application/json",
    ".jpg": "image/jpeg",
    ".m3u8": "application/vnd.apple.mpegurl",
}


def _check_prefix(prefix: str) -> str:
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


def describe_error(exc: BaseException) -> str:
    """One short printable line for a failed S3 call (code and message, cut short)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _short(text)


def _short(text: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


@dataclass
class _Spooled:
    """A key whose bytes are in the spool and not yet confirmed uploaded."""

    content_type: str
    #: Bumped by every put (under ``lock``): an upload only removes the spool file it sent.
    #: 0 while the first put of the key is still writing it.
    generation: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set by delete_prefix: the worker stops retrying at once.
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class UploadStats:
    """Counters of one store since start (read by metrics)."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    #: Failed upload attempts (each retry counts).
    failures: int = 0
    #: Uploads abandoned for this run after ``max_retries`` (they stay spooled for the next start).
    given_up: int = 0


class S3Store:
    """:class:`~packager.stores.RecordingStore` on an S3-compatible bucket, through aiobotocore."""

    name = "s3"

    def __init__(
        self,
        *,
        endpoint: str | None,
        bucket: str,
        region: str | None,
        access_key: str | None,
        secret_key: str | None,
        prefix: str = "",
        spool_dir: Path,
        queue_size: int = 256,
        workers: int = 4,
        max_retries: int | None = None,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
        close_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """Arguments left empty come from ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
        ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
        ``max_retries=None`` retries until the upload is confirmed."""
        if not bucket:
            raise ValueError("S3 store needs a bucket")
        if queue_size < 1 or workers < 1:
            raise ValueError("queue_size and workers must be at least 1")
        env = os.environ
        self.endpoint = endpoint or env.get("AWS_ENDPOINT_URL") or None
        self.bucket = bucket
        self.region = (
            region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self._access_key = access_key or env.get("AWS_ACCESS_KEY_ID") or None
        self._secret_key = secret_key or env.get("AWS_SECRET_ACCESS_KEY") or None
        stripped = prefix.strip("/")
        self.prefix = f"{check_key(stripped)}/" if stripped else ""
        self.spool_dir = Path(spool_dir)
        #: The spool is a file store of its own: atomic fsync'd writes, disk errors named.
        self._spool = FileStore(self.spool_dir)
        self.queue_size = queue_size
        self.workers = workers
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.close_timeout = close_timeout
        self.stats = UploadStats()
        #: The longest one S3 request can take before the client gives up on it.
        self._request_timeout = connect_timeout + read_timeout
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1},  # the store retries, with its own backoff
            # Plain PUT/DeleteObjects without the newer default checksums: S3-compatible
            # servers (rclone, older MinIO, Ceph) refuse or ignore them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path" if self.endpoint else "auto"},
        )
        self._rng = rng or random.Random()
        self._client: S3Client | None = None
        self._exit = contextlib.AsyncExitStack()
        self._spooled: dict[str, _Spooled] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._inflight: dict[str, asyncio.Event] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._accepting = False
        self._last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> S3Store:
        """The store of ``[record] s3_*`` settings; its spool is ``<path>/s3-spool``."""
        return cls(
            endpoint=settings.s3_endpoint or None,
            bucket=settings.s3_bucket,
            region=settings.s3_region or None,
            access_key=settings.s3_access_key or None,
            secret_key=settings.s3_secret_key or None,
            prefix=settings.s3_prefix,
            spool_dir=Path(settings.path) / SPOOL_FOLDER,
            queue_size=settings.s3_spool_files,
        )

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the client, re-queue spool files of a previous run, start the upload workers."""
        session = get_session()
        self._client = await self._exit.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                config=self._config,
            )
        )
        await self._spool.start()
        await asyncio.to_thread(_tidy_spool, self.spool_dir)
        left = []
        for key in await self._spool.list(""):
            try:
                left.append(check_key(key))
            except ValueError:
                log.warning(
                    "[s3 %s] spool file %s is no store key: left alone", self.bucket, shown(key)
                )
        if left:
            self._idle.clear()
        for key in left:
            content_type = _CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
            self._spooled[key] = _Spooled(content_type, generation=1)
            self._enqueue(key)
        if left:
            log.info(
                "[s3 %s] %d spooled uploads from a previous run re-queued", self.bucket, len(left)
            )
        self._accepting = True
        self._tasks = [
            asyncio.create_task(self._work(), name=f"s3-upload-{i}") for i in range(self.workers)
        ]
        try:
            await self._running_client().head_bucket(Bucket=self.bucket)
        except Exception as exc:  # the store still takes puts: they wait in the spool
            self._last_error = f"bucket {self.bucket}: {describe_error(exc)}"
            log.warning("[s3 %s] not reachable at start: %s", self.bucket, self._last_error)

    async def close(self) -> None:
        """Stop taking puts, wait up to ``close_timeout`` for pending uploads, then stop."""
        self._accepting = False
        if self._spooled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.close_timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._spooled:
            log.warning(
                "[s3 %s] closed with %d uploads pending, kept in the spool for the next start (%s)",
                self.bucket,
                len(self._spooled),
                self._last_error or "no error",
            )
        await self._exit.aclose()
        self._client = None

    def health(self) -> StoreHealth:
        return StoreHealth(
            pending=len(self._spooled), failed=self.stats.failures, last_error=self._last_error
        )

    # -- RecordingStore ----------------------------------------------------------------------
    async def put(self, key: str, data: Blob, content_type: str) -> None:
        """Spool ``data`` (atomic write in a thread) and queue its upload; returns before it."""
        check_key(key)
        if not self._accepting:
            raise StoreUnavailable("S3 store is not running")
        while True:
            entry = self._spooled.get(key)
            if entry is None:
                if len(self._spooled) >= self.queue_size:
                    raise StoreUnavailable(
                        f"S3 upload queue full ({len(self._spooled)} pending)"
                        f"; last error: {self._last_error or 'none'}"
                    )
                entry = self._spooled[key] = _Spooled(content_type)
                self._idle.clear()
            async with entry.lock:
                if self._spooled.get(key) is not entry:
                    continue  # uploaded or deleted while we waited: a fresh entry then
                try:
                    await self._spool.put(key, data, content_type)
                except StoreUnavailable as exc:
                    if entry.generation == 0:
                        self._forget(key)
                    self.stats.failures += 1
                    self._last_error = f"spool: {exc}"
                    raise StoreUnavailable(f"S3 spool: {exc}") from exc
                entry.generation += 1
                entry.content_type = content_type
                self._enqueue(key)
                return

    async def get(self, key: str) -> bytes | None:
        """From the spool while the upload is pending, else from the bucket."""
        check_key(key)
        entry = self._spooled.get(key)
        if entry is not None:
            async with entry.lock:
                spooled = await self._spool.get(key)
            if spooled is not None:
                return spooled
        client = self._running_client()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise self._unavailable("get", exc) from exc
        except Exception as exc:
            raise self._unavailable("get", exc) from exc

    async def list(self, prefix: str) -> Keys:
        """Keys under ``prefix`` in the bucket and in the spool, sorted."""
        _check_prefix(prefix)
        keys = {key for key in self._spooled if key.startswith(prefix)}
        keys.update(await self._list_remote(prefix))
        return sorted(keys)

    async def delete_prefix(self, prefix: str) -> int:
        """Drop pending uploads and spool files under ``prefix``, then the bucket's objects."""
        _check_prefix(prefix)
        local = [key for key in self._spooled if key.startswith(prefix)]
        for key in local:
            entry = self._spooled.get(key)
            if entry is None:  # uploaded meanwhile: the listing below finds it
                continue
            entry.dropped.set()
            async with entry.lock:
                if self._spooled.get(key) is entry:
                    self._forget(key)
                    await self._spool.delete_prefix(key)
        # An upload in flight would land after the listing below: let it finish first.
        busy = [self._inflight[key].wait() for key in local if key in self._inflight]
        try:
            await asyncio.wait_for(asyncio.gather(*busy), self._request_timeout)
        except TimeoutError as exc:
            raise StoreUnavailable("S3 delete: uploads of these files did not finish") from exc
        remote = await self._list_remote(prefix)
        client = self._running_client()
        for start in range(0, len(remote), DELETE_BATCH):
            batch = remote[start : start + DELETE_BATCH]
            try:
                reply = await client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.prefix + k} for k in batch], "Quiet": True},
                )
            except Exception as exc:
                raise self._unavailable("delete", exc) from exc
            errors = reply.get("Errors", [])
            if errors:
                first = errors[0]
                reason = f"{first.get('Code', '?')}: {first.get('Message', '')}"
                raise StoreUnavailable(
                    f"S3 delete: {len(errors)} objects not removed ({_short(reason)})"
                )
        return len(set(local) | set(remote))

    # -- uploads -----------------------------------------------------------------------------
    def _enqueue(self, key: str) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _forget(self, key: str) -> None:
        del self._spooled[key]
        if not self._spooled:
            self._idle.set()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            if key in self._inflight:  # that worker re-sends when it sees the newer generation
                continue
            done = self._inflight[key] = asyncio.Event()
            try:
                await self._upload(key)
            except Exception:  # a bug must not take an upload worker down with it
                log.exception("[s3 %s] upload of %s failed unexpectedly", self.bucket, key)
            finally:
                del self._inflight[key]
                done.set()

    async def _upload(self, key: str) -> None:
        client = self._running_client()
        attempt = 0
        while (entry := self._spooled.get(key)) is not None:
            async with entry.lock:
                if self._spooled.get(key) is not entry:
                    continue  # deleted while we waited
                if entry.generation == 0:
                    return  # its first put is still writing; it queues the key when done
                generation = entry.generation
                content_type = entry.content_type
                try:
                    data = await self._spool.get(key)
                    problem = "missing"
                except StoreUnavailable as exc:
                    data, problem = None, str(exc)
                if data is None:  # removed or unreadable behind our back: say so, go on
                    self.stats.failures += 1
                    self._last_error = f"spool file of {key} unreadable: {problem}"
                    log.error("[s3 %s] %s: upload dropped", self.bucket, self._last_error)
                    self._forget(key)
                    return
            try:
                await client.put_object(
                    Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self.stats.failures += 1
                reason = describe_error(exc)
                # One line when uploads start failing, not one per file and retry.
                if self._last_error is None:
                    log.warning(
                        "[s3 %s] uploads failing, files wait in the spool: %s", self.bucket, reason
                    )
                elif attempt % 20 == 0:
                    log.warning("[s3 %s] %s: still failing: %s", self.bucket, key, reason)
                self._last_error = reason
                if self.max_retries is not None and attempt > self.max_retries:
                    self.stats.given_up += 1
                    log.error(
                        "[s3 %s] giving up on %s for this run; it stays in the spool",
                        self.bucket,
                        key,
                    )
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.dropped.wait(), self._backoff(attempt))
                continue
            self.stats.uploaded += 1
            self.stats.uploaded_bytes += len(data)
            if self._last_error is not None:
                log.info(
                    "[s3 %s] uploads go through again; %d pending",
                    self.bucket,
                    len(self._spooled) - 1,
                )
                self._last_error = None
            attempt = 0
            async with entry.lock:
                if self._spooled.get(key) is entry and entry.generation == generation:
                    try:
                        await self._spool.delete_prefix(key)
                    except StoreUnavailable as exc:  # uploaded all the same; a restart re-sends it
                        log.warning("[s3 %s] %s stays in the spool: %s", self.bucket, key, exc)
                    self._forget(key)
                    return
            # A newer put (or a delete) came in while this one was in flight: go round again.

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter in [½, 1] of the step so workers spread out."""
        step = min(self.retry_cap, self.retry_base * 2.0 ** min(attempt - 1, 30))
        return step * (0.5 + 0.5 * self._rng.random())

    async def _list_remote(self, prefix: str) -> Keys:
        client = self._running_client()
        keys: Keys = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            async for page in pages:
                for item in page.get("Contents", []):
                    name = item.get("Key", "")
                    if name.startswith(self.prefix):
                        keys.append(name[len(self.prefix) :])
        except Exception as exc:
            raise self._unavailable("list", exc) from exc
        return keys

    def _running_client(self) -> S3Client:
        if self._client is None:
            raise StoreUnavailable("S3 store is not running")
        return self._client

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        reason = f"S3 {what}: {describe_error(exc)}"
        self._last_error = reason
        return StoreUnavailable(reason)


# -- spool housekeeping (in a worker thread) --------------------------------------------------
def _tidy_spool(root: Path) -> None:
    """Remove what a previous run left besides spooled files: half-written temp files (their
    put never returned; store keys never start with a dot) and empty folders."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            if name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
        if folder != str(root):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
