"""Benchmarks of itbench against reference implementations (``python -m perf.run``)."""
