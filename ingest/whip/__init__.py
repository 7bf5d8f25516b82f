"""WHIP ingest (RFC 9725): browsers and WebRTC encoders publish over HTTP + aiortc.

``endpoint`` serves the HTTP side (offer/answer, session URLs); ``session`` runs one publisher's
peer connection and writes its media into the stream hub; ``codecs`` takes aiortc's depacketized
frames *encoded*; ``ice`` pins host candidates to configured addresses and ports.
"""
