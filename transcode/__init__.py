"""Transcode: decode once, vertical crop/scale, encode the rendition ladder."""
