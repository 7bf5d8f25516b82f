"""What deploy/ files must agree with in the code: the config's env names and fields, the CLI's
subcommands and flags, the probe paths (shared by the Kubernetes and systemd checks)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import tempfile
import typing
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from shopcast.cli import build_parser
from shopcast.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV_PREFIX = "SHOPCAST_"
_TRANSCODE = f"{ENV_PREFIX}TRANSCODE_"


def config_env_names() -> frozenset[str]:
    """``SHOPCAST_<SECTION>_<KEY>`` for every field of every dataclass section of the config."""
    names = set()
    for section, cls in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(cls):
            names |= {
                f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}" for f in dataclasses.fields(cls)
            }
    return frozenset(names)


def check_env_name(name: str) -> None:
    """Fail unless ``name`` overrides a real config key (load_config ignores unknown names)."""
    if name.startswith(_TRANSCODE):  # [transcode] keys are the ladder's own (it rejects typos)
        try:
            load_config(None, env={name: "1"})
        except ConfigError as exc:
            if "unknown" in str(exc):
                raise AssertionError(f"{name}: no such [transcode] key ({exc})") from None
        return
    assert name in config_env_names(), f"{name} is no SHOPCAST_<SECTION>_<KEY> of config.py"


def load(toml_text: str, env: Mapping[str, str]) -> Config:
    """The config an origin would run with: this TOML file plus these env overrides."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as fh:
        fh.write(toml_text)
        fh.flush()
        try:
            return load_config(fh.name, env=env)
        except ConfigError as exc:
            raise AssertionError(f"the deployed config is refused: {exc}") from None


def parse_cli(argv: Sequence[str]) -> argparse.Namespace:
    """``shopcast <argv>`` parsed by the real parser; a flag it does not know fails the test."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(list(argv))
    except SystemExit:
        raise AssertionError(f"shopcast {' '.join(argv)}: {err.getvalue().strip()}") from None


def console_script() -> str:
    """The command ``pip install`` puts on PATH for ``shopcast.cli:main`` (setup.py)."""
    scripts = entry_points(group="console_scripts")
    names = [e.name for e in scripts if e.value == "shopcast.cli:main"]
    assert names, "no console script runs shopcast.cli:main (is the package installed?)"
    return names[0]
