"""Build shopcast: the Python packages plus the Cython twins in ``native/``.

The extensions are optional: without Cython or a C compiler the package installs pure Python.
"""

from __future__ import annotations

import glob
import os

from setuptools import find_packages, setup

PACKAGES = ("shopcast", "ingest", "transcode", "packager", "cdn_edge", "native", "benchmarks")


def native_extensions() -> list:
    if os.environ.get("SHOPCAST_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    sources = sorted(glob.glob("native/*.pyx"))
    return cythonize(
        sources,
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
    packages=find_packages(include=[f"{p}*" for p in PACKAGES]),
    package_data={"shopcast": ["static/*", "*.toml"]},
    ext_modules=native_extensions(),
    entry_points={"console_scripts": ["shopcast = shopcast.cli:main"]},
    zip_safe=False,
)
