"""The benchmarks: each module runs as `python -m bench.NAME` (docs/benchmarks.md)."""
