"""Transcode: decode once, vertical crop/scale, encode the rendition ladder.

Entry point: :class:`LadderTranscoder` (a hub reader in, a :class:`TranscodeSink` out),
configured by :class:`LadderConfig` (the ``[transcode]`` TOML section).
"""

from transcode.ladder import LadderTranscoder
from transcode.output import EncodedPacket, QueueSink, RenditionInfo, TranscodeSink
from transcode.policy import LadderConfig, Rung, VerticalMode, VerticalPolicy

__all__ = [
    "EncodedPacket",
    "LadderConfig",
    "LadderTranscoder",
    "QueueSink",
    "RenditionInfo",
    "Rung",
    "TranscodeSink",
    "VerticalMode",
    "VerticalPolicy",
]
