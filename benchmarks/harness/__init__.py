"""What tests/ and benchmarks/ both drive: a real origin in-process, ffmpeg publishers, the edge as
a process, ``shopcast serve`` as a newcomer runs it, Chromium, a WHIP client, hls.js-like viewers.

Neither tests/ nor benchmarks/ import each other; what both need lives here (or, for load tools
the tests also drive, in ``benchmarks.loadtest``).
"""
