"""``deploy/systemd/`` units: ``systemd-analyze verify`` finds nothing to say (when installed), and
the units agree with the code: hardened, restarted on failure, their command lines parse with the
real CLI, every ``SHOPCAST_*`` variable they set or document is a real config key, the edge's
node timeout is the origins' default, state lives in the unit's StateDirectory."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdn_edge.cli import edge_config
from shopcast.config import Config

from .contract import DEPLOY, ENV_PREFIX, check_env_name, console_script, parse_cli

UNITS = DEPLOY / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
#: Where the units expect the install (a venv at /opt/shopcast).
INSTALLED = f"/opt/shopcast/bin/{console_script()}"
#: ``# VAR=value`` lines of a unit's header: the environment file it documents.
DOCUMENTED = re.compile(r"^#\s+(SHOPCAST_\w+)=(\S*)", re.MULTILINE)
SPECIFIERS = {"%H": "host1", "%i": "1", "%%": "%"}


def directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → its values in order (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def unit(name: str) -> tuple[str, dict[str, list[str]]]:
    text = (UNITS / name).read_text()
    return text, directives(text)


def exec_argv(d: dict[str, list[str]], documented: dict[str, str]) -> list[str]:
    """ExecStart as the process gets it: ``${VAR}`` from the documented environment file."""
    (line,) = d["Service.ExecStart"]
    for spec, value in SPECIFIERS.items():
        line = line.replace(spec, value)

    def var(m: re.Match[str]) -> str:
        assert m.group(1) in documented, f"${{{m.group(1)}}} is not documented in the unit"
        return documented[m.group(1)] or "x"

    line = re.sub(r"\$\{(\w+)\}", var, line)
    words = shlex.split(line)
    assert words[0] == INSTALLED, words[0]
    return words[1:]


@pytest.mark.parametrize("name", ["shopcast-origin.service", "shopcast-edge.service"])
def test_unit_is_hardened_and_restarts(name: str) -> None:
    text, d = unit(name)
    assert d["Service.Restart"] == ["on-failure"]
    assert d.get("Service.DynamicUser") == ["yes"] or d.get("Service.User"), "runs as root"
    state = d["Service.StateDirectory"]
    assert len(state) == 1 and "/" not in state[0]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert d[f"Service.{key}"] == ["yes"], key
    assert d["Service.ProtectSystem"] == ["strict"]
    assert d["Service.CapabilityBoundingSet"] == [""]  # no capabilities at all
    assert d["Install.WantedBy"] == ["multi-user.target"]
    documented = dict(DOCUMENTED.findall(text))
    set_here = dict(v.partition("=")[::2] for v in d.get("Service.Environment", []))
    for var in {**documented, **set_here}:
        assert var.startswith(ENV_PREFIX)
        check_env_name(var)


def test_origin_unit_runs_serve_with_state_in_its_directory() -> None:
    text, d = unit("shopcast-origin.service")
    args = parse_cli(exec_argv(d, dict(DOCUMENTED.findall(text))))
    assert args.command == "serve" and not args.demo
    (config_dir,) = d["Service.ConfigurationDirectory"]
    assert Path(args.config).parent == Path("/etc") / config_dir
    state = Path("/var/lib") / d["Service.StateDirectory"][0]
    assert d["Service.WorkingDirectory"] == [str(state)]
    env = dict(v.partition("=")[::2] for v in d["Service.Environment"])
    # ProtectSystem=strict leaves only the state directory writable: every path shopcast
    # writes by default (store file, recordings) must be moved there.
    defaults = Config()
    for var, default in (
        ("SHOPCAST_STORE_PATH", defaults.store.path),
        ("SHOPCAST_RECORD_PATH", defaults.record.path),
    ):
        assert not Path(default).is_absolute()  # relative: under WorkingDirectory otherwise
        assert Path(env[var]).is_relative_to(state), var


def test_edge_unit_runs_a_cluster_edge() -> None:
    text, d = unit("shopcast-edge.service")
    documented = dict(DOCUMENTED.findall(text))
    words = exec_argv(d, documented)
    args = parse_cli(words)
    assert args.command == "edge"
    settings = edge_config(args, documented)  # the environment file the unit documents
    assert settings.cluster == documented["SHOPCAST_STORE_URL"]
    assert settings.cluster.startswith("postgresql://")
    assert settings.playback_secret == documented["SHOPCAST_PLAYBACK_SECRET"]
    cluster = Config().cluster
    assert settings.node_timeout == cluster.node_timeout  # the origins' default
    assert settings.host == "0.0.0.0" and settings.port == 8081
    assert settings.advertise_url == f"http://{SPECIFIERS['%H']}:{settings.port}"
    # Secrets come from the environment file, never the command line (visible in `ps`).
    command = " ".join(words)
    assert settings.cluster not in command and settings.playback_secret not in command


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["shopcast-origin.service", "shopcast-edge.service"])
def test_systemd_analyze_verify_is_silent(name: str, tmp_path: Path) -> None:
    """The unit as shipped, with ExecStart pointing at this checkout's installed command."""
    here = str(Path(sys.executable).with_name(console_script()))
    (tmp_path / name).write_text((UNITS / name).read_text().replace(INSTALLED, here))
    assert SYSTEMD_ANALYZE is not None
    run = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and not run.stderr.strip() and not run.stdout.strip(), (
        run.stdout + run.stderr
    )
