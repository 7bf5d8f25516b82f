"""Versioned schema migrations, one SQL file per version and backend, applied in order at start.

``sqlite/NNNN_name.sql`` and ``postgresql/NNNN_name.sql`` hold the same change in each dialect;
both backends have every version (a test checks). Each applied version is recorded in the
``schema_migrations`` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIALECTS = ("sqlite", "postgresql")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect``, oldest first; versions are 1, 2, 3… without gaps."""
    found = []
    for path in sorted((HERE / dialect).glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} is not NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found
