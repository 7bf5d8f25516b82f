"""The wheel: built from the checkout, installed into a fresh venv elsewhere, ``shopcast serve``
serves the API description, the shop and publish pages and hls.js without the checkout.

Slow (about a minute: a C build and a dependency install into a new venv); ``make test`` runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import aiohttp
import pytest
from packaging.requirements import Requirement

from benchmarks.harness.serve_env import read_until, serve_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]

ROOT = Path(__file__).resolve().parents[2]
NPM_HLS_JS = ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"
#: Variables that would point Python back at the checkout (or change what the build makes).
CHECKOUT_VARS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SHOPCAST_NO_EXTENSIONS")
TOP_LEVEL = ("shopcast", "ingest", "transcode", "packager", "cdn_edge", "native", "benchmarks")


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _outside_env() -> dict[str, str]:
    """The environment without anything that would point Python back at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in CHECKOUT_VARS}


def _checkout_files() -> list[str]:
    """The checkout's own files: tracked or new, not ignored, still present."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _fresh_clone(dest: Path) -> Path:
    """The checkout's files without its build/: an in-tree build would pack whatever an earlier
    build left there, deleted modules included."""
    for name in _checkout_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / "node_modules").symlink_to(ROOT / "node_modules")  # npm's hls.js, from make install
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _fresh_clone(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    # Offline-safe: the checkout venv's setuptools and Cython, no isolated build env to fetch.
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        dist,
        source,
        cwd=dist,
        env=_outside_env(),
    )
    (built,) = dist.glob("shopcast-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    env = _outside_env()
    _run(sys.executable, "-m", "venv", "--without-pip", home / "venv", cwd=home, env=env)
    python = home / "venv" / "bin" / "python"
    # The checkout's pip installs into the new venv (saves ensurepip); dependencies come from
    # the wheel's metadata, through pip's cache and index as any user's install would.
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=home, env=env)
    return home / "venv"


def test_wheel_holds_every_package_its_data_and_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(whl.read(metadata).decode())
    for package in TOP_LEVEL:
        assert f"{package}/__init__.py" in names, package
    shipped = {
        "shopcast/openapi.json",
        "shopcast/static/shop.html",
        "shopcast/static/shop.js",
        "shopcast/static/shop.css",
        "shopcast/static/shopcast-player.js",
        "shopcast/static/shopcast-player.d.ts",
        "shopcast/static/cards.js",
        "shopcast/static/page.js",
        "shopcast/static/replay.html",
        "shopcast/static/replay.js",
        "shopcast/static/publish.html",
        "shopcast/static/publish.js",
        "shopcast/static/vendor/hls.min.js",
        "shopcast/static/vendor/hls.js.LICENSE",
        "shopcast/static/vendor/hls.js.VERSION",
        "shopcast/static/vendor/shaka-player.hls.js",
        "shopcast/static/vendor/shaka-player.LICENSE",
    }
    assert shipped <= names, shipped - names
    migrations = {n for n in _checkout_files() if n.startswith("shopcast/store/migrations/")}
    assert {n for n in migrations if n.endswith(".sql")} <= names  # the store's schema ships
    assert not any(n.startswith(("tests/", "node_modules/")) for n in names)
    modules = {
        n for n in _checkout_files() if n.endswith(".py") and n.split("/", 1)[0] in TOP_LEVEL
    }
    assert {n for n in names if n.endswith(".py")} == modules
    declared = {Requirement(d) for d in meta.get_all("Requires-Dist") or []}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    listed = {Requirement(r) for line in lines if (r := line.split("#", 1)[0].strip())}
    assert declared == listed


async def test_installed_wheel_serves_api_pages_and_hls_js(venv: Path, tmp_path: Path) -> None:
    env = _outside_env()
    # Python in the venv imports the installed copy, not the checkout.
    where = _run(
        venv / "bin" / "python",
        "-c",
        "import shopcast, ingest, transcode, packager, cdn_edge, benchmarks; "
        "print(shopcast.__file__, ingest.__file__, cdn_edge.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert all(Path(f).is_relative_to(venv) for f in where.split()), where
    for command in ("edge", "loadtest"):
        _run(venv / "bin" / "shopcast", command, "--help", cwd=tmp_path, env=env)

    srv = serve_env(tmp_path)
    for name in CHECKOUT_VARS:
        srv.env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        venv / "bin" / "shopcast",
        "serve",
        cwd=tmp_path,
        env=srv.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = await read_until(proc.stdout, r"shopcast is running[\s\S]*playback:", timeout=60)
        assert "shopcast is running" in out, out + (await proc.stderr.read(4000)).decode()
        async with aiohttp.ClientSession(srv.http) as http:
            async with http.get("/api/v1/openapi.json") as r:
                assert r.status == 200
                assert await r.json() == json.loads((ROOT / "shopcast/openapi.json").read_text())
            async with http.get("/demo/demo") as r:
                assert r.status == 200
                shop = (ROOT / "shopcast/static/shop.html").read_text()
                assert await r.text() == shop.replace("{stream_id}", "demo")
            async with http.get("/publish/demo") as r:  # the stream the first start creates
                assert r.status == 200
                publish = (ROOT / "shopcast/static/publish.html").read_text()
                assert await r.text() == publish.replace("{stream_id}", "demo")
            for path, source in (
                ("/static/hls.min.js", NPM_HLS_JS),
                ("/static/shop.js", ROOT / "shopcast/static/shop.js"),
                ("/static/shopcast-player.js", ROOT / "shopcast/static/shopcast-player.js"),
                ("/static/shopcast-player.d.ts", ROOT / "shopcast/static/shopcast-player.d.ts"),
                ("/static/replay.js", ROOT / "shopcast/static/replay.js"),
                ("/static/shop.css", ROOT / "shopcast/static/shop.css"),
                ("/whip-static/publish.js", ROOT / "shopcast/static/publish.js"),
            ):
                async with http.get(path) as r:
                    assert r.status == 200, path
                    assert await r.read() == source.read_bytes(), path
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
