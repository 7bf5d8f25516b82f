"""Recordings in a local directory: atomic (temp file + rename), fsync'd, off the event loop."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import ctypes.util
import errno
import os
import queue
import shutil
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packager.stores import Blob, StoreHealth, StoreUnavailable, check_key

_TEMP_PREFIX = "."  # temp files are hidden: list() never shows a half-written object
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}


#: Writes one commit takes at most.
MAX_COMMIT = 256
#: Seconds a commit waits for more writes while puts come in together: fewer, larger syncs
#: (a put then takes this much longer; recordings queue their segments meanwhile).
COMMIT_GATHER = 0.05
#: Seconds the writer thread waits for work before it ends (a put starts it again).
WRITER_IDLE = 10.0


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` (Linux), or None: then each file is fsync'd on its own."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError, TypeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return typing.cast(Callable[[int], int], syncfs)


_syncfs = _load_syncfs()


@dataclass(slots=True)
class _Write:
    path: Path
    data: Blob
    future: asyncio.Future[None]


def _settle(results: list[tuple[_Write, OSError | None]]) -> None:
    for write, error in results:
        if not write.future.done():  # the put may have been cancelled meanwhile
            if error is None:
                write.future.set_result(None)
            else:
                write.future.set_exception(error)


def _unavailable(exc: OSError, what: str) -> StoreUnavailable:
    reason = _REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return StoreUnavailable(f"{reason} ({what})")


class FileStore:
    """A :class:`~packager.stores.RecordingStore` in a directory tree (default ``var/recordings``).

    A ``put`` returns once the bytes are fsync'd under their final name: a crash (even SIGKILL or
    a power cut) leaves either the whole object or none of it. Puts are committed in groups by
    one writer thread: every waiting file is written, then one ``syncfs`` makes them all durable
    before they are renamed (a segment a second per publisher made hundreds of fsyncs a second).
    """

    name = "file"

    def __init__(self, root: str | Path = "var/recordings", *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._failed = 0
        self._last_error: str | None = None
        self._writes: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._pid = os.getpid()

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(_unavailable(exc, str(self.root))) from exc

    async def close(self) -> None:
        """Nothing is pending: every put was on disk when it returned (the writer thread ends
        on its own once idle)."""

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fail(self, exc: StoreUnavailable) -> StoreUnavailable:
        self._failed += 1
        self._last_error = str(exc)
        return exc

    async def put(self, key: str, data: Blob, content_type: str) -> None:
        path = self._path(key)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._writer_lock:
            self._writes.put(_Write(path, data, future))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_all, name="shopcast-file-store", daemon=True
                )
                self._writer.start()
        try:
            await future
        except OSError as exc:
            raise self._fail(_unavailable(exc, f"writing {key}")) from exc

    @property
    def writer_running(self) -> bool:
        """The writer thread is up (it ends after WRITER_IDLE seconds without a put)."""
        return self._writer is not None

    def _next_commit(self, gather: bool) -> list[_Write] | None:
        """The writes waiting (at least one), or None once idle for WRITER_IDLE seconds. With
        ``gather`` (puts are coming in together), more are let in for COMMIT_GATHER seconds."""
        try:
            first = self._writes.get(timeout=WRITER_IDLE)
        except queue.Empty:
            with self._writer_lock:
                if self._writes.empty():  # a put racing this sees no writer and starts one
                    self._writer = None
                    return None
            first = self._writes.get()
        if gather:
            time.sleep(COMMIT_GATHER)
        batch = [first]
        while len(batch) < MAX_COMMIT:
            try:
                batch.append(self._writes.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_all(self) -> None:
        gather = False
        while (batch := self._next_commit(gather)) is not None:
            self._commit(batch)
            gather = len(batch) > 1

    def _commit(self, batch: list[_Write]) -> None:
        """Write every file of ``batch``, make them durable together, then give them their names."""
        results: list[tuple[_Write, OSError | None]] = []
        staged: list[tuple[_Write, str]] = []
        for write in batch:
            try:
                staged.append((write, self._stage(write.path, write.data)))
            except OSError as exc:
                results.append((write, exc))
        synced: OSError | None = None
        if staged and self.fsync and _syncfs is not None:
            # One file system (the root's) holds them all: one syncfs makes every one durable
            # (each flush of a virtual disk is a costly exit to its host).
            try:
                root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    if _syncfs(root) != 0:
                        code = ctypes.get_errno()
                        synced = OSError(code, os.strerror(code))
                finally:
                    os.close(root)
            except OSError as exc:
                synced = exc
        for write, temp in staged:
            try:
                if synced is not None:
                    raise synced
                os.replace(temp, write.path)
                results.append((write, None))
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                results.append((write, exc))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, OSError | None]]] = {}
        for write, error in results:
            by_loop.setdefault(write.future.get_loop(), []).append((write, error))
        for loop, settled in by_loop.items():
            # A closed loop: nobody waits for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)

    def _stage(self, path: Path, data: Blob) -> str:
        """``data`` in a hidden temp file beside ``path`` (fsync'd here only without syncfs)."""
        temp = f"{path.parent}/{_TEMP_PREFIX}{path.name}.{self._pid}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o644)
        except FileNotFoundError:  # a new recording's directory (few system calls otherwise)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, flags, 0o644)
        try:
            parts = [data] if isinstance(data, bytes) else [p for p in data if p]
            if len(parts) > 512:  # writev takes at most IOV_MAX (1024 on Linux) pieces
                parts = [b"".join(parts)]
            written = os.writev(fd, parts) if parts else 0
            total = sum(map(len, parts))
            if written < total:  # a short write (rare): the rest in plain writes
                rest = memoryview(b"".join(parts))[written:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
            if self.fsync and _syncfs is None:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
        return temp

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._fail(_unavailable(exc, f"reading {key}")) from exc

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        base = self.root / check_key(prefix.rstrip("/")) if prefix.strip("/") else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TEMP_PREFIX)]
            rel = Path(dirpath).relative_to(self.root)
            keys += [(rel / f).as_posix() for f in filenames if not f.startswith(_TEMP_PREFIX)]
        return sorted(keys)

    async def delete_prefix(self, prefix: str) -> int:
        try:
            return await asyncio.to_thread(self._delete, prefix)
        except OSError as exc:
            raise self._fail(_unavailable(exc, f"deleting {prefix}")) from exc

    def _delete(self, prefix: str) -> int:
        base = self.root / check_key(prefix.rstrip("/"))
        if not base.exists():
            return 0
        count = len(self._list(prefix))
        if base.is_dir():
            shutil.rmtree(base)
        else:
            base.unlink()
        return count

    def health(self) -> StoreHealth:
        return StoreHealth(pending=0, failed=self._failed, last_error=self._last_error)
