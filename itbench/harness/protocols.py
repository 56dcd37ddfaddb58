"""Scoring protocols other than Table I's ``fixed-split``: Brain-Score's cross-validated ``brainscore``.

Why a separate path: under ``brainscore`` every stimulus with responses is
scored by 10 stratified 90/10 splits (``itbench.scoring.brainscore``), so the
submission cannot be fitted once on a fixed train split. The sandboxed child
still never sees a held-out response:

1. one child run in ``features`` mode gets every image and no responses; a
   model that offers ``features(images)`` returns them once (a layer model
   extracts once), and the parent reads them out per split with Brain-Score's
   PLS(25), as Brain-Score maps a committed layer;
2. a model without ``features`` is run once per split: each child gets that
   split's train stimuli with their responses and the split's test images.

The record has ``protocol: "brainscore"``, ``split: "cv"``, the raw r with its
error, the internal-consistency ceiling and both ceiled conventions (labelled
with name and date) under ``brainscore`` and ``normalisations``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from itbench.errors import ItbenchError, SubmissionError, WeightsUnavailable
from itbench.harness import worker
from itbench.harness.device import resolve_device
from itbench.harness.record import (
    BrainScoreResult,
    Normalisation,
    PerNeuroid,
    Scores,
    SubmissionRecord,
    locked,
    record_path,
    write_record,
)
from itbench.harness.runner import (
    RunOptions,
    _ensure_weights,
    _finish,
    _new_record,
    _run_child,
    resolve_size,
    run_provenance,
    trust_level,
    validate_predictions,
)
from itbench.harness.submission import Submission, load_submission
from itbench.harness.untrusted import ChildStatus, read_predictions, read_rows
from itbench.models.cache import run_key, submission_namespace
from itbench.paths import cache_dir, results_root
from itbench.scoring import brainscore, metrics
from itbench.scoring.benchmark import Benchmark

PROTOCOLS = ("fixed-split", "brainscore")
#: The most bytes of features read back from a child (pixels of 3200 images are 1.9 GB as float32).
MAX_FEATURE_BYTES = 16 * 2**30
CV_SPLIT = "cv"  # the record's split label: every stimulus, cross-validated


def _stimuli(bench: Benchmark) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stimulus ids with responses (sorted, as the protocol orders them), responses, object names."""
    resp = bench.source.responses
    ids = np.asarray(resp.coords["stimulus_id"].values).astype(str)
    order = np.argsort(ids, kind="stable")
    meta = bench.source.stimuli.metadata
    if "object_name" in resp.coords:
        objects = np.asarray(resp.coords["object_name"].values).astype(str)
    elif "object_name" in meta.columns:
        objects = meta.loc[ids, "object_name"].astype(str).to_numpy()
    else:
        raise brainscore.ProtocolError(
            f"benchmark '{bench.id}' has no object_name for its stimuli",
            hint="Brain-Score's protocol stratifies its splits by object_name",
        )
    values = np.asarray(resp.values, dtype=np.float64)
    return ids[order], values[order], objects[order]


def _write_train(
    workdir: Path, images: np.ndarray, responses: np.ndarray, meta: dict[str, list[str]]
) -> None:
    np.save(workdir / worker.TRAIN_IMAGES, images)
    np.save(workdir / worker.TRAIN_RESPONSES, responses.astype(np.float32))
    (workdir / worker.TRAIN_META).write_text(json.dumps(meta))


def score_protocol(
    sub_path: Path, bench: Benchmark, opts: RunOptions, log: Callable[[str], None]
) -> SubmissionRecord:
    """Score one submission under ``opts.protocol`` and write its record (``<id>.cv.json``)."""
    if opts.protocol not in PROTOCOLS:
        raise ItbenchError(
            f"unknown protocol {opts.protocol!r}", hint=f"choose one of {', '.join(PROTOCOLS)}"
        )
    path = record_path(opts.results_root or results_root(), bench.id, sub_path.name, CV_SPLIT)
    with locked(path):
        record = _score(sub_path, bench, opts, log)
        record.path = write_record(record, path)
    return record


def _score(
    sub_path: Path, bench: Benchmark, opts: RunOptions, log: Callable[[str], None]
) -> SubmissionRecord:
    started = time.perf_counter()
    record = _new_record(None, sub_path.name, bench, CV_SPLIT)
    record.protocol = "brainscore"
    provenance: dict[str, Any] = {}
    try:
        sub = load_submission(sub_path)
        record = _new_record(sub, sub.id, bench, CV_SPLIT)
        record.protocol = "brainscore"
        _run(sub, bench, opts, log, record, provenance)
    except KeyboardInterrupt:
        record.mark("failed", "interrupted by the user (Ctrl-C)")
        raise
    except WeightsUnavailable as err:
        record.mark("skipped", str(err))
    except (SubmissionError, brainscore.ProtocolError) as err:
        record.mark("failed", str(err))
    return _finish(record, provenance, started)


def _run(
    sub: Submission,
    bench: Benchmark,
    opts: RunOptions,
    log: Callable[[str], None],
    record: SubmissionRecord,
    provenance: dict[str, Any],
) -> None:
    """Features once (or one fit per split), the CV scores, the ceiling; fills ``record``."""
    device = resolve_device(opts.device)
    size = resolve_size(sub, opts.size, device)
    params = sub.params_for(size)
    ids, responses, objects = _stimuli(bench)
    splits = brainscore.cv_splits(objects)
    ids_hash = hashlib.sha1("\n".join(ids).encode()).hexdigest()
    fit_key = run_key(sub.code_hash(), bench.checksum, params, opts.seed, size, bench.id, trust_level(opts))
    own_cache = submission_namespace(sub.id)
    provenance.update(run_provenance(opts, device, size, params))
    job = {
        "submission_path": str(sub.path),
        "device": device,
        "batch_size": opts.batch_size,
        "seed": opts.seed,
        "params": params,
        "size": size,
        "benchmark_id": bench.id,
        "fitted_dir": None,
        "cache_dir": str(own_cache),
    }
    feat_file = cache_dir("predictions") / f"{run_key(fit_key, 'brainscore-features', ids_hash)}.npy"
    features: np.ndarray | None = None
    if opts.use_cache and feat_file.exists():
        features = np.load(feat_file, allow_pickle=False)
        provenance["predictions_cached"] = True
        log(f"using cached features of {sub.id}")
    else:
        _ensure_weights(sub)
        log(f"loading all {len(ids)} images ...")
        all_images = bench.source.stimuli.load_images(list(ids)).numpy()

        def features_inputs(workdir: Path) -> None:
            np.save(workdir / worker.EVAL_IMAGES, all_images)
            (workdir / worker.JOB).write_text(json.dumps({**job, "mode": "features"}))

        def read_features(workdir: Path, status: ChildStatus) -> np.ndarray | None:
            return (
                read_rows(workdir / worker.FEATURES, len(ids), MAX_FEATURE_BYTES) if status.features else None
            )

        out, status = _run_child(
            sub, bench, opts, job, own_cache, own_cache, provenance, log, features_inputs, read_features
        )
        del all_images
        if status.features and out is not None:
            features = _validate_features(out, len(ids), sub.id)
            if opts.use_cache:
                tmp = feat_file.with_suffix(".tmp.npy")
                np.save(tmp, features)
                os.replace(tmp, feat_file)
    if features is not None:
        n_components: int | None = min(brainscore.PLS_COMPONENTS, features.shape[1])
        log(f"PLS({n_components}) on {features.shape[1]} features, {len(splits)} splits ...")
        score = brainscore.pls_cv(features, responses, splits)
    else:
        n_components = None
        score = _per_split_fits(
            sub, bench, opts, log, job, own_cache, provenance, ids, responses, objects, splits
        )
    ceiling = None
    if bench.source.trials is not None:
        values, stim, reps = brainscore.trial_table(bench.source.trials)
        ceiling = brainscore.internal_consistency(values, stim, reps)
    block = brainscore.summary(score, ceiling, n_components)
    record.brainscore = BrainScoreResult.model_validate(block)
    scored = _scores(score, ceiling, bench, len(ids))
    labelled = {
        **metrics.definitions(scored["scores"]),
        **block["normalisations"],
    }  # itbench's, then Brain-Score's
    record.normalisations = {k: Normalisation.model_validate(v) for k, v in labelled.items()}
    record.scores = Scores.model_validate(scored["scores"])
    record.per_neuroid = PerNeuroid.model_validate(scored["per_neuroid"])


def _validate_features(out: np.ndarray, n: int, sub_id: str) -> np.ndarray:
    """Features from the child are untrusted bytes: numeric, 2-D, one row per image, finite."""
    if out.dtype.kind not in "fiub" or out.ndim < 2 or out.shape[0] != n:
        raise SubmissionError(
            f"submission '{sub_id}': features(images) returned {out.dtype} {out.shape}, expected ({n}, n_features)"
        )
    feats = out.reshape(n, -1).astype(np.float64)
    if not np.isfinite(feats).all():
        raise SubmissionError(f"submission '{sub_id}': features(images) contain NaN or inf")
    return feats


def _per_split_fits(
    sub: Submission,
    bench: Benchmark,
    opts: RunOptions,
    log: Callable[[str], None],
    job: dict[str, Any],
    own_cache: Path,
    provenance: dict[str, Any],
    ids: np.ndarray,
    responses: np.ndarray,
    objects: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
) -> brainscore.CVScore:
    """A model without features: fitted by its own ``fit`` on each split's train stimuli (one child each)."""
    meta = bench.source.stimuli.metadata
    categories = (
        meta.loc[ids, "category_name"].astype(str).to_numpy()
        if "category_name" in meta.columns
        else np.full(len(ids), "unknown")
    )
    neuroids = [str(n) for n in bench.neuroid_ids]
    all_images = bench.source.stimuli.load_images(list(ids)).numpy()
    count = [0]

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        count[0] += 1
        log(f"split {count[0]}/{len(splits)}: fitting {sub.id} on {len(train)} stimuli ...")

        def inputs(workdir: Path) -> None:
            _write_train(
                workdir,
                all_images[train],
                responses[train],
                {
                    "stimulus_id": list(ids[train]),
                    "object_name": list(objects[train]),
                    "category_name": list(categories[train]),
                    "neuroid_id": neuroids,
                },
            )
            np.save(workdir / worker.EVAL_IMAGES, all_images[test])
            (workdir / worker.JOB).write_text(json.dumps(job))

        fitted = own_cache / "fitted" / "brainscore-unused"

        def read(workdir: Path, status: ChildStatus) -> np.ndarray:
            return read_predictions(workdir / worker.PREDICTIONS, (len(test), len(neuroids)))

        pred, _status = _run_child(sub, bench, opts, job, own_cache, fitted, provenance, log, inputs, read)
        if pred is None:
            raise SubmissionError(f"submission '{sub.id}': the worker wrote no predictions")
        return validate_predictions(pred, len(test), len(neuroids), sub.id)

    return brainscore.score_predictions(predict, responses, splits)


def _scores(
    score: brainscore.CVScore, ceiling: brainscore.Ceiling | None, bench: Benchmark, n: int
) -> dict[str, Any]:
    """Record fields the page and CLI already read (``scores``, ``per_neuroid``), filled from the CV."""

    def f(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    with np.errstate(invalid="ignore"):
        per_neuroid_r = np.nanmean(score.r, axis=0)
        mean_r = float(np.mean(np.nanmean(score.r, axis=1)))
    c = ceiling.value if ceiling else None
    return {
        "scores": {
            "mean_ev": None,
            "median_ev": None,
            "mean_r": f(mean_r),
            "median_r": f(score.raw),
            "ceiling": f(c) if c is not None else None,
            # itbench's headline of the CV raw r: noise-corrected (issue 19); the old ratio kept
            "normalized_r": f(score.raw / np.sqrt(c)) if c and c > 0 else None,
            "r_over_ceiling": f(score.raw / c) if c and c > 0 else None,
            "n_neuroids": int(score.r.shape[1]),
            "n_images": int(n),
            "n_nan_r": int(np.isnan(per_neuroid_r).sum()),
            "ci": {
                "mean_ev": None,
                "median_ev": None,
                "mean_r": None,
                "median_r": None,
                "normalized_r": None,
            },
        },
        "per_neuroid": {
            "neuroid_id": [str(i) for i in bench.neuroid_ids],
            "r": [f(v) for v in per_neuroid_r],
            "ev": [None] * len(per_neuroid_r),
            "ceiling": [f(v) for v in ceiling.per_neuroid] if ceiling else None,
        },
    }
