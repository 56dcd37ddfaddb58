"""Run one submission on one benchmark under one protocol, and record the result.

The runner owns what every protocol shares: the refusals before anything is
loaded, the record's path, its lock and its faults, and the count of test
evaluations. The protocol (``itbench.harness.protocols``, by id) plans the
child runs; the run core (``itbench.harness.runcore``) runs them sandboxed,
showing a child the train split and images, never held-out responses.
Whatever a submission does (crash, hang, run out of memory, return garbage),
:func:`score_submission` returns a record and never loses an earlier one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from itbench import paths
from itbench.errors import ItbenchError, SubmissionError
from itbench.harness import protocols
from itbench.harness import sandbox as sandbox_mod
from itbench.harness.record import (
    InvalidRecord,
    SubmissionRecord,
    failure_path,
    read_record,
    record_path,
    write_record,
)
from itbench.harness.runcore import TEST_SPLIT, RunOptions, RunState, recording
from itbench.harness.submission import discover_all, find_submission, load_submission, submission_identity
from itbench.locks import locked
from itbench.scoring.benchmark import Benchmark, load_benchmark

__all__ = ["RunOptions", "score_submission", "stale_submissions"]


def score_submission(
    submission_path: str | Path,
    benchmark_id: str = "demo",
    options: RunOptions | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    **overrides: Any,
) -> SubmissionRecord:
    """Fit, predict, score and record one submission. Never raises for its faults.

    The returned record's ``path`` says where it was stored (``failures/`` when
    an earlier ok record had to be kept).
    """
    opts = options or RunOptions()
    for name, value in overrides.items():
        setattr(opts, name, value)
    check_allowed(opts)
    check_sandbox(opts)  # fail closed, before anything is loaded or recorded
    protocol = protocols.get(opts.protocol)
    bench = load_benchmark(benchmark_id)
    protocol.check(bench, opts)  # e.g. an unknown split name, before anything runs
    sub_path = find_submission(submission_path)  # a typo is not a submission fault: no record
    path = record_path_of(sub_path, bench, opts)
    with locked(path):
        state = RunState.start(sub_path, bench, opts, protocol.record_split(opts))
        with recording(state, path):
            protocol.run(load_submission(sub_path, opts.submissions_root), bench, opts, state, log)
        return store_record(state.finish(), path, opts)


def record_path_of(sub_path: Path, bench: Benchmark, opts: RunOptions) -> Path:
    """Where the record of this submission on this benchmark under ``opts.protocol`` goes."""
    sub_id = submission_identity(sub_path, opts.submissions_root)
    split = protocols.get(opts.protocol).record_split(opts)
    return record_path(opts.results_root or paths.results_root(), bench.id, sub_id, split)


def store_record(record: SubmissionRecord, path: Path, opts: RunOptions) -> SubmissionRecord:
    """Count a test evaluation, then write the record (caller holds the lock); sets ``record.path``."""
    if record.split == TEST_SPLIT:
        before = previous_test_evaluations(path)
        record.test_evaluations = before + (1 if record.status == "ok" else 0)
    record.path = write_record(record, path)
    return record


def check_allowed(opts: RunOptions) -> None:
    """Refusals before anything is loaded or recorded, whichever executor runs the runs."""
    if opts.split == TEST_SPLIT and not opts.confirm_test:
        raise ItbenchError(
            "scoring on the held-out test split needs --confirm-test",
            "tune on val; score test once you are done (every test evaluation is counted "
            "in the record and shown on the leaderboard)",
        )


def check_sandbox(opts: RunOptions) -> None:
    """Fail closed where the children run: no bubblewrap, no run (unless --unsandboxed)."""
    if not (opts.unsandboxed or sandbox_mod.unsandboxed_requested()) and not sandbox_mod.available():
        raise sandbox_mod.SandboxUnavailable(
            f"refusing to run a submission without a sandbox: {sandbox_mod.unavailable_reason()}",
            sandbox_mod.INSTALL_HINT,
        )


def previous_test_evaluations(path: Path) -> int:
    """How many test-split evaluations the records at ``path`` (and its failure) have counted."""
    counts = [0]
    for candidate in (path, failure_path(path)):
        try:
            value = getattr(read_record(candidate), "test_evaluations", None)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counts.append(value)
    return max(counts)


def stale_submissions(
    benchmark_id: str, split: str = "val", results_root: Path | None = None, invalid: list[str] | None = None
) -> list[Path]:
    """Submissions whose record is missing, unreadable or stale (their code changed since).

    Folders whose metadata is invalid are skipped, their problem appended to
    ``invalid`` (when given), so one bad folder never stops ``score --all``.
    """
    root = results_root or paths.results_root()
    todo = []
    for _path, sub in discover_all():
        if isinstance(sub, SubmissionError):
            if invalid is not None:
                invalid.append(str(sub))
            continue
        try:
            record = read_record(record_path(root, benchmark_id, sub.id, split))
            current = isinstance(record, SubmissionRecord) and record.submission.code_hash == sub.code_hash()
        except InvalidRecord:
            current = False
        if not current:
            todo.append(sub.path)
    return todo
