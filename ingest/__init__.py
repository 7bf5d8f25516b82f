"""Ingest: publishers (RTMP, WHIP) write media units into a per-stream hub."""
