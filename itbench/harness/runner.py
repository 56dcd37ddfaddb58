"""Run one submission on one benchmark split and record the result.

The submission runs in a separate, sandboxed process (``itbench.harness.worker``)
that receives the train split and the images to predict, never held-out
responses. Whatever it does (crash, hang, run out of memory, return
garbage), this function returns a record and never loses an earlier one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itbench import paths
from itbench.errors import ItbenchError, SubmissionError, WeightsUnavailable
from itbench.harness import quotas, worker
from itbench.harness import sandbox as sandbox_mod
from itbench.harness.device import resolve_device
from itbench.harness.inputs import ChildInputs
from itbench.harness.record import (
    BenchmarkRef,
    BootstrapSummary,
    Examples,
    InvalidRecord,
    Normalisation,
    PerNeuroid,
    Provenance,
    Scores,
    SubmissionRecord,
    SubmissionRef,
    failure_path,
    locked,
    read_record,
    record_path,
    write_record,
)
from itbench.harness.submission import (
    Submission,
    check_module,
    discover_all,
    find_submission,
    load_submission,
    submission_identity,
)
from itbench.harness.untrusted import (
    ChildStatus,
    UntrustedOutput,
    clean_text,
    is_marker,
    plain_dir_chain,
    read_predictions,
    read_status,
    scan_tree,
    summarize,
)
from itbench.models.cache import prediction_file, run_key, submission_namespace
from itbench.paths import benchmark_dir, data_home, project_root
from itbench.scoring.benchmark import Benchmark, load_benchmark


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
    protocol: str = "fixed-split"
    """``fixed-split`` (Table I) or ``brainscore`` (Brain-Score's cross-validation: harness/protocols.py)."""
    max_processes: int | None = None
    max_threads: int | None = None
    """``timeout_s``, ``memory_gb``, ``disk_gb`` and these are the operator's maxima (None: from the
    environment, the config file or the defaults; ``harness/quotas.py``)."""


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


def _new_record(sub: Submission | None, sub_id: str, bench: Benchmark, split: str) -> SubmissionRecord:
    """An ``ok`` record with no scores yet; ``sub`` is None when the folder did not even parse."""
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", sub_id).lstrip("_-") or "unnamed"
    return SubmissionRecord(
        submission=SubmissionRef(
            id=sub.id if sub else safe_id,
            name=sub.name if sub else sub_id,
            table1_row=sub.table1_row if sub else None,
            code_hash=sub.code_hash() if sub else None,
        ),
        benchmark=BenchmarkRef.of(bench),
        split=split,
    )


def _ensure_weights(sub: Submission) -> None:
    """Fetch declared pretrained weights here: the sandboxed child has no network."""
    if not sub.weights or os.environ.get("ITBENCH_RANDOM_WEIGHTS") == "1":
        return
    from itbench.models.pretrained import build_model

    for name in sub.weights:
        build_model(name, pretrained=True)


def _write_inputs(
    workdir: Path,
    bench: ChildInputs,
    split: str,
    job: dict[str, Any],
    need_train: bool,
    log: Callable[[str], None],
) -> None:
    """Everything the child may see: train split and images to predict."""
    if need_train:
        log("loading train images ...")
        train = bench.train_data()
        np.save(workdir / worker.TRAIN_IMAGES, train.images.numpy())
        np.save(workdir / worker.TRAIN_RESPONSES, train.responses)
        (workdir / worker.TRAIN_META).write_text(
            json.dumps(
                {
                    key: [str(v) for v in getattr(train, key)]
                    for key in ("stimulus_id", "object_name", "category_name", "neuroid_id")
                }
            )
        )
    log(f"loading {split} images ...")
    np.save(workdir / worker.EVAL_IMAGES, bench.images(split).numpy())
    (workdir / worker.JOB).write_text(json.dumps(job))


TEST_SPLIT = "test"


def _child_failure(result: Any, status: ChildStatus | None, limits: Any) -> str:
    """One line saying why the child did not deliver predictions (all of it sanitised)."""
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
        where = f" at {status.where}" if status.where else ""
        return f"{summarize(status.error_type, 100)} in {status.phase}{where}: {summarize(status.error, 500)}"
    lines = (result.stderr_tail or "").strip().splitlines()[-1:] or ["no output"]
    return f"the submission process {result.describe()}: {summarize(lines[0], 300)}"


def _run_child(
    sub: Submission,
    bench: ChildInputs,
    opts: RunOptions,
    job: dict[str, Any],
    own_cache: Path,
    fitted: Path,
    provenance: dict[str, Any],
    log: Callable[[str], None],
    write_inputs: Callable[[Path], None] | None = None,
    read_output: Callable[[Path, ChildStatus], np.ndarray | None] | None = None,
) -> tuple[np.ndarray | None, ChildStatus]:
    """Run the worker in the sandbox; return its predictions and status, read as untrusted input.

    Other protocols pass ``write_inputs(workdir)`` (what the child may see
    instead of the fixed split's train data and eval images; never held-out
    responses) and ``read_output(workdir, status)`` (how to read what it wrote).

    ``provenance`` learns whether the run was sandboxed, what limited it and
    its peak memory even when the run fails. Nothing the child wrote is
    believed: the status is schema-checked, the predictions are read with
    their header checked against the expected shape, and a child's claim of
    missing weights is a failure, not a skip (only the parent's own check
    before launch may skip).
    """
    from itbench.harness import sandbox

    limits = quotas.effective_limits(sub, opts)  # the operator's maxima, or less where sub asks
    provenance["limits"] = quotas.describe(limits)
    workdir = Path(tempfile.mkdtemp(prefix="itbench-run-"))
    try:
        need_train = True
        if write_inputs is None:
            need_train = not is_marker(fitted / "COMPLETE")
            _write_inputs(workdir, bench, opts.split, job, need_train=need_train, log=log)
        else:
            write_inputs(workdir)
        package_dir = Path(__file__).resolve().parents[1]
        weights = [p for p in sandbox.weight_homes() if p.exists()]
        _trim_own_cache(own_cache, limits.disk_gb, log)
        log(f"running {sub.id} (fit + predict) in an isolated process ...")
        result = sandbox.run_isolated(
            [sys.executable, "-m", "itbench.harness.worker", str(workdir)],
            limits=limits,
            ro_paths=[
                sub.path,
                package_dir,
                *weights,
            ],
            rw_paths=[workdir, own_cache],
            hidden_paths=[
                data_home(),
                benchmark_dir(),
                project_root() / "leaderboard",
                paths.results_root(),
                project_root() / ".git",
                project_root() / "submissions",
            ],
            env={"ITBENCH_CACHE": str(own_cache)},  # the rest: sandbox.child_env, the one place
            unsandboxed=opts.unsandboxed,
        )
        provenance.update(
            sandboxed=result.sandboxed,
            peak_rss_gb=round(result.peak_rss_gb, 3),
            limiter=result.limiter,
        )
        if result.killed_reason == "interrupted":
            raise KeyboardInterrupt
        try:
            status = read_status(workdir / worker.STATUS)
        except UntrustedOutput as err:
            if result.ok:
                raise SubmissionError(f"submission '{sub.id}': {err}") from None
            status = None  # a crash explains it better than its half-written status
        if not result.ok or status is None or not status.ok:
            error = SubmissionError(f"submission '{sub.id}': {_child_failure(result, status, limits)}")
            error.traceback = (status.traceback if status else None) or result.stderr_tail  # type: ignore[attr-defined]
            raise error
        if read_output is not None:
            return read_output(workdir, status), status
        n = len(bench.stimulus_ids(opts.split))
        try:
            pred = read_predictions(workdir / worker.PREDICTIONS, (n, len(bench.neuroid_ids)))
        except UntrustedOutput as err:
            raise SubmissionError(
                f"submission '{sub.id}': {err}",
                f"predict(images) must return an array of shape ({n}, {len(bench.neuroid_ids)})",
            ) from None
        status.fit_cached = status.fit_cached and not need_train  # a claim the parent can check
        return pred, status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _trim_own_cache(own_cache: Path, disk_gb: float | None, log: Callable[[str], None]) -> None:
    """Empty the submission's cache namespace when an earlier run left it over the quota.

    The quota counts what a run adds; without this, a run could flood the
    namespace (files or bytes) and every later run would start over the limit
    (or with a file walk too long to be a useful check).
    """
    if not disk_gb:
        return
    used, _largest = scan_tree(own_cache)
    if used > disk_gb * 2**30:
        log(f"the cache of this submission exceeds its {disk_gb} GiB quota: emptying it")
        shutil.rmtree(own_cache, ignore_errors=True)
        own_cache.mkdir(parents=True, exist_ok=True)


def check_location(folder: Path) -> None:
    """Refuse a submission folder that is, holds or sits inside what the child must not see.

    The folder is bound into the sandbox, so ``submissions/x -> ../../benchmark``
    (or a folder inside the data home) would hand the child held-out data.
    """
    guarded = [data_home(), benchmark_dir(), project_root() / "leaderboard", paths.results_root()]
    guarded += [project_root() / ".git", Path(__file__).resolve().parents[1]]
    for place in guarded:
        place = place.resolve()
        if folder == place or folder.is_relative_to(place) or place.is_relative_to(folder):
            raise SubmissionError(
                f"submission folder {folder} overlaps {place}, which a submission may not see",
                "a submission folder lives in submissions/ and is not a link elsewhere",
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
    bench = load_benchmark(benchmark_id)
    if opts.protocol == "fixed-split":
        bench.stimulus_ids(opts.split)  # validates the split name early
    sub_path = find_submission(submission_path)  # a typo is not a submission fault: no record
    if opts.protocol != "fixed-split":
        from itbench.harness.protocols import score_protocol

        return score_protocol(sub_path, bench, opts, log)
    path = record_path_of(sub_path, bench, opts)
    with locked(path):
        return store_record(_score_locked(sub_path, bench, opts, log, path), path, opts)


def record_path_of(sub_path: Path, bench: Benchmark, opts: RunOptions) -> Path:
    """Where the record of this submission on this benchmark split goes."""
    sub_id = submission_identity(sub_path, opts.submissions_root)
    return record_path(opts.results_root or paths.results_root(), bench.id, sub_id, opts.split)


def store_record(record: SubmissionRecord, path: Path, opts: RunOptions) -> SubmissionRecord:
    """Count a test evaluation, then write the record (caller holds the lock); sets ``record.path``."""
    if opts.split == TEST_SPLIT:
        before = previous_test_evaluations(path)
        record.test_evaluations = before + (1 if record.status == "ok" else 0)
    record.path = write_record(record, path)
    return record


def _store_predictions(pred_file: Path, pred: np.ndarray, provenance: dict[str, Any]) -> None:
    """Cache predictions with how they were made (a warm re-score reports the same)."""
    tmp = pred_file.with_suffix(".tmp.npy")
    np.save(tmp, pred)
    os.replace(tmp, pred_file)
    keep = {k: provenance.get(k) for k in ("device", "sandboxed", "peak_rss_gb")}
    pred_file.with_suffix(".json").write_text(json.dumps(keep))


# The run is split in three so that every executor shares the driver's part:
#   plan_run      (driver)   check, resolve device/size/params, look up cached predictions;
#   run_child     (any node) the sandboxed worker: train data + images in, raw predictions out;
#   complete_run  (driver)   validate, cache, score against the held-out responses.
# ``RunState`` + ``recording`` turn a submission's faults into the record, the same way everywhere.


@dataclass
class RunState:
    """One run's record as it is being built, and when it started."""

    record: SubmissionRecord
    started: float = field(default_factory=time.perf_counter)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, sub_path: Path, bench: Benchmark, opts: RunOptions) -> RunState:
        """A run whose submission folder has not been parsed yet."""
        sub_id = submission_identity(sub_path, opts.submissions_root)
        return cls(record=_new_record(None, sub_id, bench, opts.split))

    @property
    def ended(self) -> bool:
        """True once a fault has decided the outcome (nothing more to run)."""
        return self.record.status != "ok"

    def finish(self) -> SubmissionRecord:
        """The record with its provenance and wall time, ready to write."""
        return _finish(self.record, self.provenance, self.started)


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


@dataclass
class PlannedRun:
    """A run after the driver's checks: ``job`` is what the child needs, None when ``cached``."""

    sub: Submission
    fit_key: str
    pred_file: Path
    job: dict[str, Any] | None = None
    cached: np.ndarray | None = None


def _score_locked(
    sub_path: Path, bench: Benchmark, opts: RunOptions, log: Callable[[str], None], path: Path
) -> SubmissionRecord:
    """The local (in-process, serial) path: plan, run the child here, complete."""
    state = RunState.start(sub_path, bench, opts)
    with recording(state, path):
        sub = load_submission(sub_path, opts.submissions_root)
        plan = plan_run(sub, bench, opts, state, log)
        pred, status = plan.cached, None
        if plan.job is not None:
            pred, status = run_child(plan.sub, bench, opts, plan.job, plan.fit_key, state.provenance, log)
        complete_run(plan, pred, status, bench, opts, state, log)
    return state.finish()


def trust_level(opts: RunOptions) -> str:
    """Part of every cache key: an unsandboxed run could have planted anything, so its caches stay its own."""
    unsandboxed = opts.unsandboxed or sandbox_mod.unsandboxed_requested()
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


def plan_run(
    sub: Submission,
    bench: Benchmark,
    opts: RunOptions,
    state: RunState,
    log: Callable[[str], None],
    device: str | None = None,
) -> PlannedRun:
    """Driver side, before the child: check, resolve the run, serve it from the prediction cache if we can.

    The prediction cache is the driver's: workers never read or write it.
    ``device`` is given when the run will happen elsewhere (a cluster node's
    GPU need not be visible here); else ``opts.device`` is resolved here.
    """
    state.record = _new_record(sub, sub.id, bench, opts.split)
    check_location(sub.path)
    check_module(sub)  # a syntax error or no build(): fail now, before any data is loaded
    device = device or resolve_device(opts.device)
    size = resolve_size(sub, opts.size, device)
    params = sub.params_for(size)
    fit_key = run_key(
        sub.code_hash(),
        bench.checksum,
        bench.split_hash,
        params,
        opts.seed,
        size,
        bench.id,
        trust_level(opts),
    )
    pred_file = prediction_file(fit_key, opts.split)
    state.provenance.update(run_provenance(opts, device, size, params))
    plan = PlannedRun(sub=sub, fit_key=fit_key, pred_file=pred_file)
    if opts.use_cache and pred_file.exists() and pred_file.with_suffix(".json").exists():
        plan.cached = np.load(pred_file, allow_pickle=False)
        cached_how = json.loads(pred_file.with_suffix(".json").read_text())
        cached_how["sandboxed"] = (
            trust_level(opts) == "sandboxed"
        )  # the key says so; never trust the side file
        state.provenance.update(cached_how)
        state.provenance.update(fit_cached=True, predictions_cached=True)
        log(f"using cached predictions of {sub.id} (fitted state unchanged)")
    else:
        plan.job = {
            "submission_path": str(sub.path),
            "device": device,
            "batch_size": opts.batch_size,
            "seed": opts.seed,
            "params": params,
            "size": size,
            "benchmark_id": bench.id,
        }
    return plan


def run_child(
    sub: Submission,
    inputs: ChildInputs,
    opts: RunOptions,
    job: dict[str, Any],
    fit_key: str,
    provenance: dict[str, Any],
    log: Callable[[str], None],
) -> tuple[np.ndarray | None, ChildStatus]:
    """The child part, runnable on any node: predictions and status from the sandboxed worker.

    ``inputs`` is the benchmark (local path) or a ``WorkerInputs`` (Ray task):
    train data and the images to predict, so the held-out responses need not
    exist where this runs. The submission's own cache (fitted state,
    activations) is the one of the node it runs on.
    """
    check_location(sub.path)  # again where the folder is bound into the sandbox
    # A submission writes only its own cache namespace (fitted state, activations):
    # it can never plant predictions or states for another submission.
    own_cache = submission_namespace(sub.id)
    fitted = plain_dir_chain(own_cache, "fitted", fit_key)
    if not opts.use_cache:
        shutil.rmtree(fitted, ignore_errors=True)
    _ensure_weights(sub)
    job = {**job, "fitted_dir": str(fitted), "cache_dir": str(own_cache)}
    return _run_child(sub, inputs, opts, job, own_cache, fitted, provenance, log)


def complete_run(
    plan: PlannedRun,
    pred: Any,
    status: ChildStatus | None,
    bench: Benchmark,
    opts: RunOptions,
    state: RunState,
    log: Callable[[str], None],
) -> None:
    """Driver side, after the child: validate the untrusted predictions, cache them, score them."""
    if status is not None:
        state.provenance["fit_cached"] = status.fit_cached
    if pred is None:
        raise SubmissionError(f"submission '{plan.sub.id}': the worker wrote no predictions")
    n = len(bench.stimulus_ids(opts.split))
    pred = validate_predictions(pred, n, len(bench.neuroid_ids), plan.sub.id)
    if opts.use_cache and not state.provenance["predictions_cached"]:
        _store_predictions(plan.pred_file, pred, state.provenance)
    log("scoring ...")
    scored = bench.score(pred, opts.split, n_boot=opts.n_boot, seed=opts.seed)
    state.record.scores = Scores.model_validate(scored["scores"])
    state.record.per_neuroid = PerNeuroid.model_validate(scored["per_neuroid"])
    state.record.examples = Examples.model_validate(scored["examples"]) if scored["examples"] else None
    if scored.get("bootstrap"):
        state.record.bootstrap = BootstrapSummary.model_validate(scored["bootstrap"])
    state.record.normalisations = {
        k: Normalisation.model_validate(v) for k, v in scored.get("normalisations", {}).items()
    } or None


def _finish(record: SubmissionRecord, provenance: dict[str, Any], started: float) -> SubmissionRecord:
    """Attach how the run was made, and when it ended."""
    record.provenance = Provenance(**provenance)
    record.provenance.stamp(time.perf_counter() - started)
    return record


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
