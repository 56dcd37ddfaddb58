"""The run core: one child run, from plan to record, the same for every protocol.

A protocol (``fixed_split``, ``brainscore_protocol``, ...) decides *what* a
child is shown and what it must give back; this module decides *how*:

1. the record being built (:class:`RunState`, :func:`recording`): a
   submission's faults become its record, never a traceback;
2. what the child is shown and where it may keep state (:class:`Exposure`);
3. the sandboxed run (:func:`run_child`): inputs written into a fresh work
   folder, the worker run under the limits, everything it wrote read back as
   untrusted input, every error message written by this process.

**The exposure rule.** Every child run is shown the responses of a known set
of stimuli (none for a features run; the train split for a fixed-split fit;
90 % of all stimuli for a Brain-Score per-split fit). What a child can write
that outlives the run (its own cache: activations, fitted state) lives in a
namespace keyed by that set, so a run only ever reads state written by runs
that were shown exactly what it is shown. A run shown responses of stimuli
that other runs are scored on (``keep=False``: Brain-Score's per-split fits)
gets an empty own cache that is thrown away afterwards, and no fitted state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itbench import paths
from itbench.errors import SubmissionError, WeightsUnavailable
from itbench.harness import environments, quotas, sandbox, worker
from itbench.harness.options import RunOptions
from itbench.harness.record import (
    BenchmarkRef,
    BrainScorePlugin,
    Provenance,
    SubmissionRecord,
    SubmissionRef,
    write_record,
)
from itbench.harness.submission import Submission, submission_identity
from itbench.harness.untrusted import (
    ChildStatus,
    UntrustedOutput,
    clean_text,
    is_marker,
    plain_dir_chain,
    read_status,
    scan_tree,
)
from itbench.models.cache import outputs_dir, run_key, submission_namespace
from itbench.paths import benchmark_dir, data_home, project_root
from itbench.scoring.benchmark import Benchmark

TEST_SPLIT = "test"

Log = Callable[[str], None]


# --- how a run is made ------------------------------------------------------------


def resolve_size(sub: Submission, size: str, device: str) -> str:
    """Full size on a GPU; a submission's ``small`` preset on CPU when it has one."""
    if size != "auto":
        if size != "full" and size not in sub.sizes:
            raise SubmissionError(
                f"submission '{sub.id}' has no size preset '{size}'",
                f"presets: {', '.join(['full', *sub.sizes])}",
            )
        return size
    return "small" if device == "cpu" and "small" in sub.sizes else "full"


def trust_level(opts: RunOptions) -> str:
    """Part of every cache key: an unsandboxed run could have planted anything, so its caches stay its own."""
    unsandboxed = opts.unsandboxed or sandbox.unsandboxed_requested()
    return "unsandboxed" if unsandboxed else "sandboxed"


def run_provenance(opts: RunOptions, device: str, size: str, params: dict[str, Any]) -> dict[str, Any]:
    """How a run is made, before it starts (every protocol records the same facts)."""
    return {
        "device": device,
        "size": size,
        "params": params,
        "seed": opts.seed,
        "batch_size": opts.batch_size,
        "fit_cached": False,
        "predictions_cached": False,
        "sandboxed": trust_level(opts) == "sandboxed",
    }


def base_job(sub: Submission, opts: RunOptions, bench: Benchmark, device: str, size: str) -> dict[str, Any]:
    """What every child is told about its run (the run core adds its folders)."""
    return {
        "submission_path": str(sub.path),
        "device": device,
        "batch_size": opts.batch_size,
        "seed": opts.seed,
        "params": sub.params_for(size),
        "size": size,
        "benchmark_id": bench.id,
    }


def validate_predictions(pred: Any, n_images: int, n_neuroids: int, sub_id: str) -> np.ndarray:
    """Shape (n_images, n_neuroids), numeric and finite, or a SubmissionError saying why."""

    def fail(problem: str) -> SubmissionError:
        return SubmissionError(
            f"submission '{sub_id}': {problem}",
            f"predict(images) must return an array of shape ({n_images}, {n_neuroids})",
        )

    if not isinstance(pred, np.ndarray):
        raise fail(f"predictions are a {type(pred).__name__}, not an array")
    if pred.dtype.kind not in "fiub":
        raise fail(f"predictions have dtype {pred.dtype}, not numbers")
    if pred.shape != (n_images, n_neuroids):
        raise fail(f"predictions have shape {pred.shape}, expected ({n_images}, {n_neuroids})")
    bad = ~np.isfinite(pred)
    if bad.any():
        n_nan, n_inf = int(np.isnan(pred).sum()), int(np.isinf(pred).sum())
        raise fail(
            f"predictions contain {n_nan} NaN and {n_inf} inf values "
            f"(in {int(bad.any(axis=0).sum())} neuroids)"
        )
    return pred.astype(np.float64)


def guarded_places() -> list[Path]:
    """What a child may never see: data, held-out splits, results, the repository, the harness itself."""
    return [
        data_home(),
        benchmark_dir(),
        project_root() / "leaderboard",
        paths.results_root(),
        project_root() / ".git",
        Path(__file__).resolve().parents[1],
    ]


def check_location(folder: Path) -> None:
    """Refuse a submission folder that is, holds or sits inside what the child must not see.

    The folder is bound into the sandbox, so ``submissions/x -> ../../benchmark``
    (or a folder inside the data home) would hand the child held-out data.
    """
    for place in guarded_places():
        place = place.resolve()
        if folder == place or folder.is_relative_to(place) or place.is_relative_to(folder):
            raise SubmissionError(
                f"submission folder {folder} overlaps {place}, which a submission may not see",
                "a submission folder lives in submissions/ and is not a link elsewhere",
            )


def ensure_weights(sub: Submission) -> None:
    """Fetch declared pretrained weights here: the sandboxed child has no network."""
    if not sub.weights or os.environ.get("ITBENCH_RANDOM_WEIGHTS") == "1":
        return
    from itbench.models.pretrained import build_model

    for name in sub.weights:
        build_model(name, pretrained=True)


# --- the record being built -------------------------------------------------------


def new_record(
    sub: Submission | None, sub_id: str, bench: Benchmark, split: str, protocol: str = "fixed-split"
) -> SubmissionRecord:
    """An ``ok`` record with no scores yet; ``sub`` is None when the folder did not even parse."""
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", sub_id).lstrip("_-") or "unnamed"
    record = SubmissionRecord(
        submission=SubmissionRef(
            id=sub.id if sub else safe_id,
            name=sub.name if sub else sub_id,
            table1_row=sub.table1_row if sub else None,
            code_hash=sub.code_hash() if sub else None,
            brainscore=BrainScorePlugin(**sub.brainscore) if sub and sub.brainscore else None,
        ),
        benchmark=BenchmarkRef.of(bench),
        split=split,
    )
    if protocol != "fixed-split":
        record.protocol = protocol
    return record


@dataclass
class RunState:
    """One run's record as it is being built, and when it started."""

    record: SubmissionRecord
    started: float = field(default_factory=time.perf_counter)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, sub_path: Path, bench: Benchmark, opts: RunOptions, split: str | None = None) -> RunState:
        """A run whose submission folder has not been parsed yet (``split``: the record's label)."""
        sub_id = submission_identity(sub_path, opts.submissions_root)
        return cls(record=new_record(None, sub_id, bench, split or opts.split, opts.protocol))

    def begin(self, sub: Submission, bench: Benchmark) -> None:
        """The folder parsed: the record names the submission as its metadata says."""
        self.record = new_record(sub, sub.id, bench, self.record.split, self.record.protocol)

    @property
    def ended(self) -> bool:
        """True once a fault has decided the outcome (nothing more to run)."""
        return self.record.status != "ok"

    def finish(self) -> SubmissionRecord:
        """The record with its provenance and wall time, ready to write."""
        self.record.provenance = Provenance(**self.provenance)
        self.record.provenance.stamp(time.perf_counter() - self.started)
        return self.record


@contextlib.contextmanager
def recording(state: RunState, path: Path) -> Iterator[None]:
    """Turn a submission's faults into its record; on Ctrl-C write the interrupted record, re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        state.record.mark("failed", "interrupted by the user (Ctrl-C)")
        write_record(state.finish(), path)
        raise
    except WeightsUnavailable as err:
        state.record.mark("skipped", str(err))
    except SubmissionError as err:
        state.record.mark("failed", clean_text(str(err), 2000))
        detail = getattr(err, "traceback", None)
        if detail:  # the full story goes to the record; the terminal gets one line
            state.record.error_traceback = clean_text(str(detail), 8000)


# --- the exposure rule ------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """Which stimuli's responses a child run is shown, and so which own cache it gets."""

    shown: str
    """``none``, or a digest of the benchmark and the stimulus ids whose responses the child gets."""
    keep: bool = True
    """False: the run is shown responses of stimuli that other runs are scored on, so its own
    cache starts empty and is thrown away, and it keeps no fitted state."""

    @classmethod
    def nothing(cls) -> Exposure:
        """A run shown no responses at all (features of every image)."""
        return cls("none")

    @classmethod
    def responses_of(cls, bench: Benchmark, stimulus_ids: Sequence[str], keep: bool = True) -> Exposure:
        """A run shown the responses of ``stimulus_ids`` of ``bench``."""
        digest = hashlib.sha1("\n".join(sorted(map(str, stimulus_ids))).encode()).hexdigest()
        return cls(run_key(bench.id, bench.checksum, digest), keep)

    def namespace(self, sub_id: str, trust: str) -> Path:
        """The own-cache folder of runs with this exposure (only meaningful when ``keep``)."""
        return submission_namespace(sub_id) / f"{trust}-shown-{self.shown}"


@contextlib.contextmanager
def own_cache(exposure: Exposure, sub_id: str, trust: str) -> Iterator[Path]:
    """The child's writable cache: its exposure's namespace, or an empty folder thrown away after."""
    if exposure.keep:
        folder = exposure.namespace(sub_id, trust)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="itbench-cache-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- one sandboxed child run ------------------------------------------------------

WriteInputs = Callable[[Path, bool], None]
"""``write_inputs(workdir, restorable)``: the child's data files (``restorable``: a fitted state
is there to load, so the train split need not be written)."""
ReadOutput = Callable[[Path, ChildStatus], Any]


@dataclass
class ChildRun:
    """What one sandboxed child is shown and must give back."""

    sub: Submission
    job: dict[str, Any]
    exposure: Exposure
    write_inputs: WriteInputs
    read_output: ReadOutput
    fit_key: str | None = None
    """Names the fitted state kept in the exposure's namespace (None: nothing kept)."""


def run_child(
    child: ChildRun, opts: RunOptions, provenance: dict[str, Any], log: Log
) -> tuple[Any, ChildStatus]:
    """Run the worker in the sandbox; return what ``child.read_output`` read back, and the status.

    ``provenance`` learns whether the run was sandboxed, what limited it and its
    peak memory even when the run fails. Nothing the child wrote is believed:
    the status is schema-checked, outputs are read by the protocol's reader
    with their size fixed in advance, and a child's claim of a restored fit
    counts only if a complete fitted state was there before it started.
    """
    sub = child.sub
    check_location(sub.path)  # again where the folder is bound into the sandbox
    limits = quotas.effective_limits(sub, opts)  # the operator's maxima, or less where the submission asks
    provenance["limits"] = quotas.describe(limits)
    ensure_weights(sub)
    prepared = environments.prepare(sub, log, allow_sdists=opts.allow_sdists)  # its own packages, if any
    if prepared is not None:
        provenance["environment"] = prepared.lock.model_dump()
    env_dir = prepared.site if prepared is not None else None
    with own_cache(child.exposure, sub.id, trust_level(opts)) as cache:
        fitted = _fitted_dir(child, cache, opts)
        restorable = fitted is not None and is_marker(fitted / "COMPLETE")
        job = {**child.job, "fitted_dir": str(fitted) if fitted else None, "cache_dir": str(cache)}
        workdir = Path(tempfile.mkdtemp(prefix="itbench-run-"))
        try:
            child.write_inputs(workdir, restorable)
            (workdir / worker.JOB).write_text(json.dumps(job))
            _trim_own_cache(cache, limits.disk_gb, log)
            log(f"running {sub.id} in an isolated process ...")
            result = _sandboxed(sub, workdir, cache, limits, opts, env_dir)
            provenance.update(
                sandboxed=result.sandboxed, peak_rss_gb=round(result.peak_rss_gb, 3), limiter=result.limiter
            )
            status = _read_back_status(sub, workdir, result, limits)
            status.fit_cached = status.fit_cached and restorable  # a claim the parent can check
            return child.read_output(workdir, status), status
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _fitted_dir(child: ChildRun, cache: Path, opts: RunOptions) -> Path | None:
    """Where the fitted state of this run is kept (refusing links planted in the cache)."""
    if child.fit_key is None or not child.exposure.keep:
        return None
    fitted = plain_dir_chain(cache, "fitted", child.fit_key)
    if not opts.use_cache:
        shutil.rmtree(fitted, ignore_errors=True)
    return fitted


def _sandboxed(
    sub: Submission,
    workdir: Path,
    cache: Path,
    limits: sandbox.Limits,
    opts: RunOptions,
    env_dir: Path | None,
) -> sandbox.IsolatedResult:
    """The worker under bubblewrap: the submission, itbench, weights and its environment read-only;
    workdir and cache writable."""
    result = sandbox.run_isolated(
        [sys.executable, "-m", "itbench.harness.worker", str(workdir)],
        limits=limits,
        ro_paths=[
            sub.path,
            Path(__file__).resolve().parents[1],
            *(p for p in sandbox.weight_homes() if p.exists()),
        ],
        rw_paths=[workdir, cache],
        hidden_paths=[*guarded_places()[:-1], project_root() / "submissions"],
        env={"ITBENCH_CACHE": str(cache)},  # the rest: sandbox.child_env, the one place
        unsandboxed=opts.unsandboxed,
        env_dir=env_dir,
    )
    if result.killed_reason == "interrupted":
        raise KeyboardInterrupt
    return result


def _read_back_status(
    sub: Submission, workdir: Path, result: sandbox.IsolatedResult, limits: sandbox.Limits
) -> ChildStatus:
    """The child's status if it succeeded; else a SubmissionError whose message this process wrote."""
    try:
        status = read_status(workdir / worker.STATUS)
    except UntrustedOutput as err:
        if result.ok:
            raise SubmissionError(f"submission '{sub.id}': {err}") from None
        status = None  # a crash explains it better than its half-written status
    if result.ok and status is not None and status.ok:
        return status
    error = SubmissionError(f"submission '{sub.id}': {child_failure(result, status, limits)}")
    error.traceback = (status.traceback if status else None) or result.stderr_tail  # type: ignore[attr-defined]
    raise error


def child_failure(result: sandbox.IsolatedResult, status: ChildStatus | None, limits: sandbox.Limits) -> str:
    """One line saying why the child did not deliver: a sentence of ours, the child's words only quoted."""
    if result.killed_reason == "timeout":
        return f"timed out after {limits.timeout_s:.0f} s (limit; raise with --timeout)"
    if result.killed_reason == "memory":
        return (
            f"ran out of memory: exceeded the {limits.memory_gb} GiB limit "
            f"(peak {result.peak_rss_gb:.1f} GiB, {result.limiter}; raise with --memory-gb)"
        )
    if result.killed_reason == "disk":
        return f"exceeded the {limits.disk_gb} GiB disk quota of its writable folders (workdir, own cache)"
    if result.killed_reason == "interrupted":
        return "interrupted by the user (Ctrl-C)"
    if status is not None and not status.ok:
        return status.failure_sentence()
    if status is None and result.ok:
        return f"the submission process {result.describe()} without writing a status"
    lines = (result.stderr_tail or "").strip().splitlines()[-1:]
    said = f'; its last line of output: "{clean_text(lines[0], 300)}"' if lines else ""
    return f"the submission process {result.describe()}{said}"


def _trim_own_cache(cache: Path, disk_gb: float | None, log: Log) -> None:
    """Empty the submission's cache namespace when an earlier run left it over the quota.

    The quota counts what a run adds; without this, a run could flood the
    namespace (files or bytes) and every later run would start over the limit
    (or with a file walk too long to be a useful check).
    """
    if not disk_gb:
        return
    used, _largest = scan_tree(cache)
    if used > disk_gb * 2**30:
        log(f"the cache of this submission exceeds its {disk_gb} GiB quota: emptying it")
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)


# --- the parent's own caches of a submission ----------------------------------------


def store_in_parent_cache(path: Path, array: np.ndarray, sub: Submission, opts: RunOptions, log: Log) -> bool:
    """Cache a validated output, counted against the submission's disk quota; False when it would not fit.

    The parent writes these files, outside any sandbox quota; without this
    count a submission could grow them without bound (wide features, many
    splits) at the operator's expense.
    """
    quota = quotas.effective_limits(sub, opts).disk_gb
    used = scan_tree(outputs_dir(sub.id))[0] + scan_tree(submission_namespace(sub.id))[0]
    if quota and used + array.nbytes > quota * 2**30:
        log(f"not caching {path.name}: {sub.id}'s caches would exceed its {quota} GiB disk quota")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
    return True
