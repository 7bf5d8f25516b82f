"""Video: one decode thread per stream, one scale+encode thread per rung, passthrough rung.

``SourceDecoder`` (thread) decodes every unit once, picks constant-rate output slots, decides
which slots are IDRs (the same for every rung) and hands each picked frame to every
``RungEncoder`` (thread) through a small bounded queue, so a slow rung holds the decoder back
instead of piling up frames. PyAV releases the GIL inside FFmpeg, so the threads run in parallel.
"""

from transcode.video.decoder import SourceDecoder
from transcode.video.encoder import PickedFrame, RungEncoder, open_h264_encoder
from transcode.video.passthrough import PassthroughRung
from transcode.video.shaper import FrameShaper

__all__ = [
    "FrameShaper",
    "PassthroughRung",
    "PickedFrame",
    "RungEncoder",
    "SourceDecoder",
    "open_h264_encoder",
]
