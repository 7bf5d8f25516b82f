"""The FLV tag body parsers and timestamp unwrapper in use: the compiled twins
(``native/flv_tags.pyx``) unless absent or ``SHOPCAST_NO_EXTENSIONS=1``; :mod:`ingest.rtmp.flv`
is the reference."""

from __future__ import annotations

import os
from collections.abc import Callable

from ingest.media import MediaUnit
from ingest.rtmp import flv

Parse = Callable[[bytes, int, float], MediaUnit | None]

parse_video: Parse = flv.parse_video
parse_audio: Parse = flv.parse_audio
TimestampUnwrapper: type[flv.TimestampUnwrapper] = flv.TimestampUnwrapper
NATIVE = False
if not os.environ.get("SHOPCAST_NO_EXTENSIONS"):
    try:
        from native.flv_tags import TimestampUnwrapper as _NativeUnwrapper
        from native.flv_tags import parse_audio as _native_audio
        from native.flv_tags import parse_video as _native_video
    except ImportError:
        pass
    else:
        parse_video = _native_video
        parse_audio = _native_audio
        TimestampUnwrapper = _NativeUnwrapper
        NATIVE = True

__all__ = ["NATIVE", "TimestampUnwrapper", "parse_audio", "parse_video"]
