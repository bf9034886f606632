"""Reproducible benchmarks: `python -m benchmarks` prints a table and writes docs/benchmarks.md."""
