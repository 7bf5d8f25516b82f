"""Packager: fMP4/CMAF parts, LL-HLS playlists, timed metadata."""
