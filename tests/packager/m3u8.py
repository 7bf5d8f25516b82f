"""A small, strict-enough playlist reader for tests (tags, attribute lists, URIs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)(?:,|$)')


def attributes(text: str) -> dict[str, str]:
    out = {}
    pos = 0
    while pos < len(text):
        m = _ATTR.match(text, pos)
        assert m, f"bad attribute list at {text[pos:]!r}"
        key, value = m.group(1), m.group(2)
        assert key not in out, f"duplicate attribute {key}"
        out[key] = value[1:-1] if value.startswith('"') else value
        pos = m.end()
    return out


@dataclass
class Line:
    tag: str  # "" for a URI line
    value: str

    @property
    def attrs(self) -> dict[str, str]:
        return attributes(self.value)


@dataclass
class Playlist:
    lines: list[Line] = field(default_factory=list)

    def tags(self, name: str) -> list[Line]:
        return [line for line in self.lines if line.tag == name]

    def one(self, name: str) -> Line:
        found = self.tags(name)
        assert len(found) == 1, f"{name}: {len(found)} occurrences"
        return found[0]


def parse(text: str) -> Playlist:
    rows = text.splitlines()
    assert rows[0] == "#EXTM3U"
    pl = Playlist()
    for row in rows[1:]:
        if not row:
            continue
        if row.startswith("#EXT"):
            tag, _, value = row.partition(":")
            pl.lines.append(Line(tag, value))
        else:
            assert not row.startswith("#"), row
            pl.lines.append(Line("", row))
    return pl
