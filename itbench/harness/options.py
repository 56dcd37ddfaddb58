"""How a run is made: the options every layer of the harness reads (CLI flags map onto them).

Its own module, below the run core, the protocols, the quotas and the
executors, so that each of them can name it without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunOptions:
    """How to run: defaults suit a laptop; the CLI maps its flags onto these."""

    split: str = "val"
    device: str = "auto"
    batch_size: int = 64
    seed: int = 0
    size: str = "auto"
    timeout_s: float | None = None
    memory_gb: float | None = None
    use_cache: bool = True
    n_boot: int = 1000
    results_root: Path | None = None
    unsandboxed: bool = False
    """Run without bubblewrap (your own trusted code only): the record says so, it never
    ranks above sandboxed ones, and its caches are never reused by a sandboxed run."""
    confirm_test: bool = False
    """Required for ``split='test'``: each test evaluation is counted in the record."""
    submissions_root: Path | None = None
    """Where record identities come from (default: the project's ``submissions/``)."""
    disk_gb: float | None = None
    allow_sdists: bool = False
    """Let a submission's environment build sdists (inside the sandbox, network on); default wheels only."""
    max_processes: int | None = None
    max_threads: int | None = None
    """``timeout_s``, ``memory_gb``, ``disk_gb`` and these are the operator's maxima (None: from the
    environment, the config file or the defaults; ``harness/quotas.py``)."""
    protocol: str = "fixed-split"
    """A registered protocol id (``itbench.harness.protocols``): ``fixed-split`` or ``brainscore``."""
