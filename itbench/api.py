"""The Python front door: what a notebook needs, the same calls the CLI makes.

    >>> import itbench
    >>> record = itbench.score("submissions/pixels_ridge", benchmark="demo")
    >>> record.scores.mean_r, record.scores.ci["mean_r"]
    >>> bench = itbench.load_benchmark("demo")     # images, responses, split
    >>> itbench.render()                           # regenerate leaderboard/

Everything returns typed objects (:class:`~itbench.harness.record.SubmissionRecord`,
:class:`~itbench.scoring.benchmark.Benchmark`, ...), never raw JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from itbench.harness.record import Record, SubmissionRecord, SweepRecord
    from itbench.page.leaderboard import RenderReport
    from itbench.scoring.benchmark import Benchmark


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load_benchmark(benchmark_id: str | None = None) -> Benchmark:
    """A benchmark by id (default: the real data when installed, else the embedded demo)."""
    from itbench.scoring import benchmark

    return benchmark.load_benchmark(benchmark_id or benchmark.default_benchmark())


def score(
    submission: str | Path,
    benchmark: str | None = None,
    *,
    log: Callable[[str], None] = _stderr,
    **options: Any,
) -> SubmissionRecord:
    """Fit, predict, score and record one submission (a folder or an id under ``submissions/``).

    ``options`` are :class:`~itbench.harness.runner.RunOptions` fields: ``split``,
    ``device``, ``size``, ``seed``, ``n_boot``, ``results_root`` ...
    """
    from itbench.harness.runner import RunOptions, score_submission
    from itbench.scoring.benchmark import default_benchmark

    return score_submission(submission, benchmark or default_benchmark(), RunOptions(**options), log=log)


def score_all(
    benchmark: str | None = None,
    *,
    stale_only: bool = True,
    log: Callable[[str], None] = _stderr,
    **options: Any,
) -> list[SubmissionRecord]:
    """Score every submission (by default only those without a current record)."""
    from itbench.harness.runner import RunOptions, score_submission, stale_submissions
    from itbench.harness.submission import Submission, discover_all
    from itbench.scoring.benchmark import default_benchmark

    bid = benchmark or default_benchmark()
    opts = RunOptions(**options)
    invalid: list[str] = []
    if stale_only:
        folders = stale_submissions(bid, opts.split, opts.results_root, invalid=invalid)
    else:
        found = discover_all()
        folders = [p for p, s in found if isinstance(s, Submission)]
        invalid += [str(s) for _, s in found if not isinstance(s, Submission)]
    for problem in invalid:  # a bad folder is reported, never stops the others
        log(f"skipping an invalid submission: {problem}")
    return [score_submission(folder, bid, opts, log=log) for folder in folders]


def sweep(model: str, benchmark: str | None = None, **options: Any) -> SweepRecord:
    """Score every layer of a torchvision/timm model with one PCA + ridge readout (Fig. 1)."""
    from itbench.harness.sweep import run_sweep
    from itbench.scoring.benchmark import default_benchmark

    return run_sweep(model, benchmark_id=benchmark or default_benchmark(), **options)


def read_record(path: str | Path) -> Record:
    """Load one result record (validated; raises ``InvalidRecord`` saying what is wrong)."""
    from itbench.harness import record

    return record.read_record(Path(path))


def render(
    results_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    benchmarks: Sequence[str] | None = None,
) -> RenderReport:
    """Regenerate the leaderboard page from stored records (never runs a model)."""
    from itbench import paths
    from itbench.page.leaderboard import render as render_page

    root = paths.project_root()
    return render_page(
        Path(results_root) if results_root else paths.results_root(),
        Path(out_dir) if out_dir else root / "leaderboard",
        list(benchmarks) if benchmarks else None,
        root / "benchmark" / "table1.csv",
    )
