"""Where things live: the data home (downloads, caches) and the project tree.

The data home is ``$ITBENCH_HOME`` (default ``~/.cache/itbench``). The project
root (``benchmark/``, ``submissions/``, ``leaderboard/``) is ``$ITBENCH_ROOT``
or the nearest parent of the working directory that holds ``benchmark/`` and
``submissions/``, falling back to the checkout this package was imported from.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Root of downloaded data and caches; created on first use."""
    home = Path(os.environ.get("ITBENCH_HOME", Path.home() / ".cache" / "itbench")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_root() -> Path:
    """Root of all caches: ``$ITBENCH_CACHE`` or ``<data home>/cache``.

    The runner sets ``ITBENCH_CACHE`` for sandboxed submissions, which cannot
    see the data home itself (it holds held-out responses).
    """
    env = os.environ.get("ITBENCH_CACHE")
    return Path(env).expanduser() if env else data_home() / "cache"


def cache_dir(kind: str) -> Path:
    """A named cache folder (``fitted``, ``activations``, ``predictions`` ...)."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_root(path: Path) -> bool:
    return (path / "benchmark").is_dir() and (path / "submissions").is_dir()


def project_root() -> Path:
    """The itbench project tree the user is working in."""
    env = os.environ.get("ITBENCH_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if _is_root(candidate):
            return candidate
    return Path(__file__).resolve().parent.parent


def benchmark_dir() -> Path:
    """Committed benchmark files: manifests, splits, reference numbers, demo data."""
    return project_root() / "benchmark"


def results_root() -> Path:
    """Where result records are written: ``$ITBENCH_RESULTS`` or ``leaderboard/results``."""
    env = os.environ.get("ITBENCH_RESULTS")
    return Path(env).expanduser() if env else project_root() / "leaderboard" / "results"


def results_dir(benchmark_id: str) -> Path:
    """Where result records of one benchmark are written."""
    return results_root() / benchmark_id
