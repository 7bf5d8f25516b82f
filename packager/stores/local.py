"""Recordings in a local directory: atomic (temp file + rename), fsync'd, off the event loop."""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import shutil
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


def _unavailable(exc: OSError, what: str) -> StoreUnavailable:
    reason = _REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return StoreUnavailable(f"{reason} ({what})")


class FileStore:
    """A :class:`~packager.stores.RecordingStore` in a directory tree (default ``var/recordings``).

    A ``put`` returns once the bytes are fsync'd under their final name: a crash (even SIGKILL or
    a power cut) leaves either the whole object or none of it.
    """

    name = "file"

    def __init__(self, root: str | Path = "var/recordings", *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._failed = 0
        self._last_error: str | None = None

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(_unavailable(exc, str(self.root))) from exc

    async def close(self) -> None:
        """Nothing is pending: every put was on disk when it returned."""

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fail(self, exc: StoreUnavailable) -> StoreUnavailable:
        self._failed += 1
        self._last_error = str(exc)
        return exc

    async def put(self, key: str, data: Blob, content_type: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(self._write, path, data)
        except OSError as exc:
            raise self._fail(_unavailable(exc, f"writing {key}")) from exc

    def _write(self, path: Path, data: Blob) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.tmp")
        try:
            with open(temp, "wb") as fh:
                if isinstance(data, bytes):
                    fh.write(data)
                else:
                    fh.writelines(data)
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

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
