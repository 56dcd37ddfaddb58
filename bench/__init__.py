"""Benchmarks of itbench against reference implementations (``python -m bench.run``)."""
