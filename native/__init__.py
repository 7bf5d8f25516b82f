"""Cython twins of hot pure-Python modules; see ``setup.py``."""
