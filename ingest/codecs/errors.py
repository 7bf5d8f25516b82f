"""The one error type of the codec home: malformed codec configuration or bitstream."""

from __future__ import annotations


class BitstreamError(ValueError):
    """Malformed or out-of-range codec configuration data or payload."""
