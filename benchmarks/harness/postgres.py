"""A real PostgreSQL for tests and benchmarks: Debian's server binaries, ``initdb`` + ``pg_ctl``
in a temporary directory as an unprivileged user, listening on 127.0.0.1 on a free port, stopped
at the end. The ``postgres`` / ``postgres_url`` fixtures (tests/conftest.py) wrap it; tests
that stop and restart the server start their own :class:`PostgresServer`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmarks.harness.serve_env import free_port

#: The unprivileged account the server runs as when the tests run as root (postgres refuses
#: root); ``nobody`` exists on every Debian system.
SERVER_USER = "nobody"
DB_USER = "shopcast"


def server_bin() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory (package ``postgresql``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    return Path(found[-1]).parent if found else None


requires_postgres = pytest.mark.skipif(
    server_bin() is None, reason="Debian postgresql not installed (make system-deps)"
)


class PostgresServer:
    """One throwaway cluster: ``start()`` → ``url(db)`` … → ``stop()``; restartable."""

    def __init__(self) -> None:
        bindir = server_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = bindir
        self.port = free_port()
        # Under /tmp (world-traversable), not pytest's root-only tmp_path: the server user
        # must reach its data directory.
        self.base = Path(tempfile.mkdtemp(prefix="shopcast-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._user: str | None = SERVER_USER if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "-A", "trust", "-E", "UTF8")
        self._databases = 0

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / tool), *args],
            user=self._user,
            cwd=self.base,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self, durable: bool = False) -> None:
        """``durable``: commits flushed to disk as in production (benchmarks of write load)."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data}"
        if not durable:
            # A throwaway cluster: no flushing to disk (the tests kill shopcast, not this).
            options += " -c fsync=off -c full_page_writes=off"
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{self.log_text()}")

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as when a database server goes away."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        self._databases += 1
        name = f"t{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, name)
        return self.url(name)

    def log_text(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""
