"""Where predictions meet held-out responses: the benchmark and its metrics.

``benchmark.Benchmark`` pairs a source with its fixed split and is the only
object that holds val/test responses; it hands submissions the train split
(:class:`itbench.contract.TrainData`) and images only. ``metrics`` computes
per-neuroid explained variance and Pearson r, split-half ceilings and
bootstrap confidence intervals (checked against scikit-learn and scipy).
"""
