"""Benchmarks of the running centre: `python -m bench.latency` (intake → console latency)."""
