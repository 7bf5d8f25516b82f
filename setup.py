"""Build shopcast: the Python packages, the Cython twins in ``native/`` and the web assets.

The extensions are optional: without Cython or a C compiler the package installs pure Python;
without libsrt's headers (Debian ``libsrt-openssl-dev``) the SRT binding is left out.
Runtime dependencies come from ``requirements.txt`` (one list for ``pip install -r`` and the
wheel's metadata). hls.js is pinned in ``package.json``; the build copies npm's file and its
licence into ``shopcast/static/vendor/`` so the wheel serves it without a checkout.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path
from typing import ClassVar

from setuptools import Command, find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGES = ("shopcast", "ingest", "transcode", "packager", "cdn_edge", "native", "benchmarks")
SRT_BINDING = "native/libsrt.pyx"
SRT_HEADER = "/usr/include/srt/srt.h"
HLS_JS_NPM = HERE / "node_modules" / "hls.js"
HLS_JS_VENDOR = HERE / "shopcast" / "static" / "vendor"
#: npm file → name in static/vendor/ (the server serves hls.min.js; the rest travels with it).
HLS_JS_FILES = {"dist/hls.min.js": "hls.min.js", "LICENSE": "hls.js.LICENSE"}
#: Shaka Player, vendored the same way (served at /static/shaka-player.hls.js).
SHAKA_NPM = HERE / "node_modules" / "shaka-player"
SHAKA_FILES = {"dist/shaka-player.hls.js": "shaka-player.hls.js", "LICENSE": "shaka-player.LICENSE"}


def requirements() -> list[str]:
    """``requirements.txt`` as PEP 508 strings: comments and blank lines dropped."""
    reqs = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req.startswith("-"):  # pip options (-r, -e, --index-url) have no place in metadata
            raise SystemExit(f"requirements.txt: pip option in {line!r}; list packages only")
        if req:
            reqs.append(req)
    return reqs


def vendor_hls_js() -> None:
    """Copy hls.js and Shaka Player from node_modules (``npm install``) into the package, with
    their licences."""
    for npm, files in ((HLS_JS_NPM, HLS_JS_FILES), (SHAKA_NPM, SHAKA_FILES)):
        if not (npm / next(iter(files))).exists():
            if all((HLS_JS_VENDOR / name).exists() for name in files.values()):
                continue  # already vendored, e.g. building from an unpacked sdist
            raise SystemExit(f"{npm.name} is missing: run `npm install` (or `make install`) first")
        HLS_JS_VENDOR.mkdir(parents=True, exist_ok=True)
        for source, name in files.items():
            shutil.copyfile(npm / source, HLS_JS_VENDOR / name)
        version = json.loads((npm / "package.json").read_text())["version"]
        (HLS_JS_VENDOR / f"{npm.name}.VERSION").write_text(f"{version}\n")


class VendorHlsJs(Command):
    """``setup.py vendor_hls``: refresh ``shopcast/static/vendor/`` (the Makefile runs it)."""

    description = "copy hls.js from node_modules into shopcast/static/vendor"
    user_options: ClassVar[list[tuple[str, str | None, str]]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        vendor_hls_js()


class BuildPy(build_py):
    """build_py that vendors hls.js first (an editable install reads the checkout instead)."""

    def run(self) -> None:
        if not getattr(self, "editable_mode", False):
            vendor_hls_js()
        super().run()


def native_extensions() -> list:
    if os.environ.get("SHOPCAST_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    from setuptools import Extension

    modules: list = [p for p in sorted(glob.glob("native/*.pyx")) if p != SRT_BINDING]
    if os.path.exists(SRT_HEADER):
        modules.append(Extension("native.libsrt", [SRT_BINDING], libraries=["srt"]))
    return cythonize(
        modules,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(
    name="shopcast",
    version="0.1.0",
    description="Live-stream shopping video backbone: RTMP/WHIP in, vertical LL-HLS ladder out",
    python_requires=">=3.11",
    install_requires=requirements(),
    packages=find_packages(include=[p for name in PACKAGES for p in (name, f"{name}.*")]),
    package_data={
        "shopcast": ["openapi.json", "static/*.*", "static/vendor/*", "store/migrations/*/*.sql"],
        "native": ["*.pyi"],
    },
    ext_modules=native_extensions(),
    cmdclass={"build_py": BuildPy, "vendor_hls": VendorHlsJs},
    entry_points={"console_scripts": ["shopcast = shopcast.cli:main"]},
    zip_safe=False,
)
