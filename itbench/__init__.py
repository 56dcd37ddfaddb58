"""itbench: score models of macaque IT cortex responses on fixed benchmarks.

The front door for Python (the CLI calls the same functions)::

    import itbench
    record = itbench.score("submissions/pixels_ridge", benchmark="demo")
    bench = itbench.load_benchmark("demo")
    itbench.render()

The wings, in the order data flows: ``itbench.data`` (sources, assemblies,
stimuli, splits), ``itbench.scoring`` (benchmark, metrics), ``itbench.models``
(readouts, features, training: building blocks for submissions),
``itbench.harness`` (submission loader, sandboxed runner, records, sweeps) and
``itbench.page`` (the leaderboard). ``itbench.contract`` is what a submission
sees. Importing ``itbench`` is cheap: the front door loads a wing on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from itbench.version import __version__

__all__ = ["__version__", "load_benchmark", "read_record", "render", "score", "score_all", "sweep"]

if TYPE_CHECKING:
    from itbench.api import load_benchmark, read_record, render, score, score_all, sweep


def __getattr__(name: str) -> Any:
    if name in __all__:
        from itbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'itbench' has no attribute {name!r}")
