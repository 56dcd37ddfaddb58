"""Run one submission on one benchmark split and record the result.

The submission runs in a separate, sandboxed process (``itbench.harness.worker``)
that receives the train split and the images to predict, never held-out
responses. Whatever it does (crash, hang, run out of memory, return
garbage), this function returns a record and never loses an earlier one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itbench import paths
from itbench.console import show_progress
from itbench.errors import SubmissionError, WeightsUnavailable
from itbench.harness import worker
from itbench.harness.device import resolve_device
from itbench.harness.record import (
    BenchmarkRef,
    Examples,
    InvalidRecord,
    Normalisation,
    PerNeuroid,
    Provenance,
    Scores,
    SubmissionRecord,
    SubmissionRef,
    locked,
    read_record,
    record_path,
    write_record,
)
from itbench.harness.submission import Submission, discover, find_submission, load_submission
from itbench.models.cache import prediction_file, run_key, submission_namespace
from itbench.paths import benchmark_dir, data_home, project_root
from itbench.scoring.benchmark import Benchmark, load_benchmark

DEFAULT_TIMEOUT_S = 4 * 3600.0
DEFAULT_MEMORY_FRACTION = 0.85


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
    protocol: str = "fixed-split"  # or "brainscore" (itbench.harness.protocols)


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


def default_memory_gb() -> float:
    import psutil

    return round(psutil.virtual_memory().total / 2**30 * DEFAULT_MEMORY_FRACTION, 1)


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
    bench: Benchmark,
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


def _child_failure(result: Any, status: dict[str, Any] | None, limits: Any) -> str:
    """One line saying why the child did not deliver predictions."""
    if result.killed_reason == "timeout":
        return f"timed out after {limits.timeout_s:.0f} s (limit; raise with --timeout)"
    if result.killed_reason == "memory":
        return (
            f"ran out of memory: exceeded the {limits.memory_gb} GiB limit "
            f"(peak {result.peak_rss_gb:.1f} GiB; raise with --memory-gb)"
        )
    if result.killed_reason == "interrupted":
        return "interrupted by the user (Ctrl-C)"
    if status and not status.get("ok"):
        return f"{status['error_type']} in {status['phase']}: {status['error']}"
    tail = (result.stderr_tail or "").strip().splitlines()[-1:] or ["no output"]
    return f"the submission process {result.describe()}: {tail[0][:300]}"


def _run_child(
    sub: Submission,
    bench: Benchmark,
    opts: RunOptions,
    job: dict[str, Any],
    own_cache: Path,
    fitted: Path,
    provenance: dict[str, Any],
    log: Callable[[str], None],
    write_inputs: Callable[[Path], None] | None = None,
    output: str = worker.PREDICTIONS,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Run the worker in the sandbox; return its ``output`` array (None if it wrote none) and its status.

    ``provenance`` learns whether the run was sandboxed and its peak memory
    even when the run fails. ``write_inputs(workdir)`` replaces the default
    inputs (the fixed split's train data and eval images): other protocols
    hand the child other subsets, never held-out responses.
    """
    from itbench.harness import sandbox

    workdir = Path(tempfile.mkdtemp(prefix="itbench-run-"))
    try:
        if write_inputs is None:
            need_train = not (fitted / "COMPLETE").exists()
            _write_inputs(workdir, bench, opts.split, job, need_train=need_train, log=log)
        else:
            write_inputs(workdir)
        limits = sandbox.Limits(
            timeout_s=opts.timeout_s or sub.timeout_s or DEFAULT_TIMEOUT_S,
            memory_gb=opts.memory_gb or sub.memory_gb or default_memory_gb(),
            cpu_threads=None,
        )
        package_dir = Path(__file__).resolve().parents[1]
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        env = {
            "ITBENCH_CACHE": str(own_cache),
            "PYTHONPATH": str(package_dir.parent),
            "TORCH_HOME": str(torch_home),
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "1",
            "ITBENCH_PROGRESS": "1" if show_progress() else "0",
        }
        for name in ("ITBENCH_RANDOM_WEIGHTS", "CUDA_VISIBLE_DEVICES"):
            if name in os.environ:
                env[name] = os.environ[name]
        log(f"running {sub.id} (fit + predict) in an isolated process ...")
        result = sandbox.run_isolated(
            [sys.executable, "-m", "itbench.harness.worker", str(workdir)],
            limits=limits,
            ro_paths=[
                Path(sys.prefix),
                sub.path,
                package_dir,
                *[p for p in (torch_home, hf_home) if p.exists()],
            ],
            rw_paths=[workdir, own_cache],
            hidden_paths=[
                data_home(),
                benchmark_dir(),
                project_root() / "leaderboard",
                paths.results_root(),
                Path.home(),
            ],
            env=env,
        )
        status_file = workdir / worker.STATUS
        status = json.loads(status_file.read_text()) if status_file.exists() else None
        provenance.update(sandboxed=result.sandboxed, peak_rss_gb=round(result.peak_rss_gb, 3))
        if result.killed_reason == "interrupted":
            raise KeyboardInterrupt
        if result.returncode != 0 or not status or not status.get("ok"):
            error_type = (status or {}).get("error_type")
            message = _child_failure(result, status, limits)
            if status and error_type == "WeightsUnavailable":
                raise WeightsUnavailable(status["error"], status.get("hint"))
            raise SubmissionError(f"submission '{sub.id}': {message}")
        out_file = workdir / output
        return (np.load(out_file, allow_pickle=False) if out_file.exists() else None), status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
    bench = load_benchmark(benchmark_id)
    if opts.protocol == "fixed-split":
        bench.stimulus_ids(opts.split)  # validates the split name early
    sub_path = find_submission(submission_path)  # a typo is not a submission fault: no record
    if opts.protocol != "fixed-split":
        from itbench.harness.protocols import score_protocol

        return score_protocol(sub_path, bench, opts, log)
    path = record_path(opts.results_root or paths.results_root(), bench.id, sub_path.name, opts.split)
    with locked(path):
        record = _score_locked(sub_path, bench, opts, log, path)
        record.path = write_record(record, path)
    return record


def _store_predictions(pred_file: Path, pred: np.ndarray, provenance: dict[str, Any]) -> None:
    """Cache predictions with how they were made (a warm re-score reports the same)."""
    tmp = pred_file.with_suffix(".tmp.npy")
    np.save(tmp, pred)
    os.replace(tmp, pred_file)
    keep = {k: provenance.get(k) for k in ("device", "sandboxed", "peak_rss_gb")}
    pred_file.with_suffix(".json").write_text(json.dumps(keep))


def _score_locked(
    sub_path: Path, bench: Benchmark, opts: RunOptions, log: Callable[[str], None], path: Path
) -> SubmissionRecord:
    """The run itself; on Ctrl-C the interrupted record is written before re-raising."""
    started = time.perf_counter()
    record = _new_record(None, sub_path.name, bench, opts.split)
    provenance: dict[str, Any] = {}
    try:
        sub = load_submission(sub_path)
        record = _new_record(sub, sub.id, bench, opts.split)
        pred = _predictions(sub, bench, opts, provenance, log)
        log("scoring ...")
        scored = bench.score(pred, opts.split, n_boot=opts.n_boot, seed=opts.seed)
        record.scores = Scores.model_validate(scored["scores"])
        record.per_neuroid = PerNeuroid.model_validate(scored["per_neuroid"])
        record.examples = Examples.model_validate(scored["examples"])
        record.normalisations = {
            k: Normalisation.model_validate(v) for k, v in scored["normalisations"].items()
        }
    except KeyboardInterrupt:
        record.mark("failed", "interrupted by the user (Ctrl-C)")
        write_record(_finish(record, provenance, started), path)
        raise
    except WeightsUnavailable as err:
        record.mark("skipped", str(err))
    except SubmissionError as err:
        record.mark("failed", str(err))
    return _finish(record, provenance, started)


def _predictions(
    sub: Submission,
    bench: Benchmark,
    opts: RunOptions,
    provenance: dict[str, Any],
    log: Callable[[str], None],
) -> np.ndarray:
    """Validated predictions for the split: from the cache, or from a sandboxed run."""
    device = resolve_device(opts.device)
    size = resolve_size(sub, opts.size, device)
    params = sub.params_for(size)
    fit_key = run_key(sub.code_hash(), bench.checksum, bench.split_hash, params, opts.seed, size, bench.id)
    pred_file = prediction_file(fit_key, opts.split)
    # A submission writes only its own cache namespace (fitted state, activations):
    # it can never plant predictions or states for another submission.
    own_cache = submission_namespace(sub.id)
    fitted = own_cache / "fitted" / fit_key
    provenance.update(
        device=device,
        size=size,
        params=params,
        seed=opts.seed,
        batch_size=opts.batch_size,
        fit_cached=False,
        predictions_cached=False,
        sandboxed=None,
    )
    if opts.use_cache and pred_file.exists() and pred_file.with_suffix(".json").exists():
        pred = np.load(pred_file, allow_pickle=False)
        provenance.update(json.loads(pred_file.with_suffix(".json").read_text()))
        provenance.update(fit_cached=True, predictions_cached=True)
        log(f"using cached predictions of {sub.id} (fitted state unchanged)")
    else:
        if not opts.use_cache:
            shutil.rmtree(fitted, ignore_errors=True)
        _ensure_weights(sub)
        job = {
            "submission_path": str(sub.path),
            "device": device,
            "batch_size": opts.batch_size,
            "seed": opts.seed,
            "params": params,
            "size": size,
            "benchmark_id": bench.id,
            "fitted_dir": str(fitted),
            "cache_dir": str(own_cache),
        }
        pred, status = _run_child(sub, bench, opts, job, own_cache, fitted, provenance, log)
        if pred is None:
            raise SubmissionError(f"submission '{sub.id}': the worker wrote no predictions")
        provenance["fit_cached"] = status.get("fit_cached", False)
    n = len(bench.stimulus_ids(opts.split))
    pred = validate_predictions(pred, n, len(bench.neuroid_ids), sub.id)
    if opts.use_cache and not provenance["predictions_cached"]:
        _store_predictions(pred_file, pred, provenance)
    return pred


def _finish(record: SubmissionRecord, provenance: dict[str, Any], started: float) -> SubmissionRecord:
    """Attach how the run was made, and when it ended."""
    record.provenance = Provenance(**provenance)
    record.provenance.stamp(time.perf_counter() - started)
    return record


def stale_submissions(benchmark_id: str, split: str = "val", results_root: Path | None = None) -> list[Path]:
    """Submissions whose record is missing, unreadable or stale (their code changed since)."""
    root = results_root or paths.results_root()
    todo = []
    for sub in discover():
        try:
            record = read_record(record_path(root, benchmark_id, sub.id, split))
            current = isinstance(record, SubmissionRecord) and record.submission.code_hash == sub.code_hash()
        except InvalidRecord:
            current = False
        if not current:
            todo.append(sub.path)
    return todo
