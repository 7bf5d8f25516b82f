"""A rendition's files: a segment held as its parts is joined on its first read, and reads,
lists, removals and the recorder's hand-off see the same bytes either way."""

from __future__ import annotations

import pytest

from packager.rendition import RenditionFiles


def test_a_segment_is_joined_once_on_first_read() -> None:
    files = RenditionFiles()
    files["init.mp4"] = b"init"
    parts = (b"moof1", b"moof2", b"moof3")
    files.add_unjoined("7.m4s", parts)
    assert "7.m4s" in files and len(files) == 2
    assert files.chunks("7.m4s") is parts  # the recorder's hand-off: no join
    assert sorted(files) == ["7.m4s", "init.mp4"]
    assert files.get("7.m4s") == b"moof1moof2moof3"
    assert files["7.m4s"] is files["7.m4s"]  # joined once, then kept
    assert files.chunks("7.m4s") == (b"moof1moof2moof3",)
    assert dict(files.items()) == {"init.mp4": b"init", "7.m4s": b"moof1moof2moof3"}


def test_missing_removed_and_replaced_names() -> None:
    files = RenditionFiles()
    files.add_unjoined("8.m4s", (b"a", b"b"))
    files.add_unjoined("9.m4s", (b"c",))
    assert files.get("8.0.m4s") is None and "8.0.m4s" not in files
    with pytest.raises(KeyError):
        files.chunks("8.0.m4s")
    files.discard("8.m4s")  # never joined, gone
    files.discard("8.m4s")
    assert "8.m4s" not in files and files.get("8.m4s") is None
    del files["9.m4s"]
    with pytest.raises(KeyError):
        del files["9.m4s"]
    files["9.m4s"] = b"whole"
    files.add_unjoined("9.m4s", (b"x", b"y"))  # the newer value wins
    assert files["9.m4s"] == b"xy" and len(files) == 1
    assert files.pop("9.m4s") == b"xy" and not files
