"""schemathesis fuzzes the served OpenAPI spec against a real `shopcast serve`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from pathlib import Path

import aiohttp
import pytest

from benchmarks.harness.serve_env import serve_env

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
SCHEMATHESIS = shutil.which("schemathesis", path=str(BIN)) or shutil.which("schemathesis")
TOKEN = "contract-token"


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis not installed")
async def test_schemathesis_finds_no_server_error_or_spec_mismatch(tmp_path: Path) -> None:
    srv = serve_env(
        tmp_path,
        SHOPCAST_API_TOKENS=TOKEN,
    )
    env = srv.env
    server = await asyncio.create_subprocess_exec(
        str(BIN / "shopcast"),
        "serve",
        "--config",
        "shopcast.toml",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{srv.http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/api/v1/openapi.json") as r:
                        served = await r.json()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        committed = json.loads(Path("shopcast/openapi.json").read_text())
        assert served == committed  # the committed spec is the one served
        fuzz = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "run",
            f"{base}/api/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--workers",
            "1",
            "--seed",
            "20261121",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await asyncio.wait_for(fuzz.communicate(), 300)
        report = out.decode(errors="replace")
        assert fuzz.returncode == 0, report[-4000:]
        # Every operation schemathesis selects was exercised; it selects all the spec lists but
        # one (11 of 12 before replay; the count now follows the spec instead of a literal).
        operations = sum(
            method in ("get", "post", "put", "patch", "delete")
            for item in committed["paths"].values()
            for method in item
        )
        selected = re.search(r"Selected: (\d+)/(\d+)", report)
        assert selected is not None, report[-4000:]
        assert selected.group(1) == selected.group(2) == str(operations - 1)
        assert f"Tested: {operations - 1}" in report
    finally:
        server.terminate()
        await server.wait()
