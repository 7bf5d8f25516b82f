"""``shopcast loadtest``: RTMP publishers, LL-HLS viewers and product tags against an origin or an
edge, then a report (Markdown + JSON): achieved load, latency percentiles, errors, target CPU.

Viewers behave like hls.js in low-latency mode: load the multivariant playlist, pick a rendition,
hold a blocking reload for the next part (``_HLS_msn``/``_HLS_part``, S 6.2.5.2), fetch the parts
it lists, read the rendition reports. Every loop is bounded by ``--duration`` and by a count;
every request is counted once as succeeded or failed (by kind).
"""
