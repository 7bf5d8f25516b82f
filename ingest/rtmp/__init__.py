"""RTMP ingest: a sans-I/O core (handshake, chunk stream, AMF0, FLV) and its asyncio server."""
