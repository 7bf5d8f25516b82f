"""shopcast wiring: configuration, CLI, store and the HTTP application."""

__version__ = "0.1.0"
