"""itbench: score models of macaque IT cortex responses on fixed benchmarks."""

__version__ = "0.1.0"
