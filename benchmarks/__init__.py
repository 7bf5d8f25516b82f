"""Benchmarks (pytest-benchmark) and the load tools they drive."""
