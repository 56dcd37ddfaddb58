"""The ``brainscore`` protocol: Brain-Score's cross-validated MajajHong2015public scoring, as a peer of Table I's.

Why a protocol of its own: every stimulus with responses is scored by 10
stratified 90/10 splits (``itbench.scoring.brainscore``), so the submission
cannot be fitted once on a fixed train split. Its child runs go through the
run core like every other, and no child ever sees a held-out response:

1. one child run in ``features`` mode is shown every image and no responses
   (exposure: nothing). A model that offers ``features(images)`` returns them
   once; the worker sends features no wider than there are stimuli as they
   are, and the Gram matrix of wider ones (PLS only needs inner products), so
   what the parent reads is at most n x n float64 whatever the child claims;
   the parent reads them out per split with Brain-Score's PLS(25);
2. a model without ``features`` is fitted once per split: each child is shown
   that split's train responses and the split's test images. Those children
   were shown responses of stimuli other runs are scored on, so they get an
   empty own cache that is thrown away, and keep no fitted state.

The record has ``protocol: "brainscore"``, ``split: "cv"``, the raw r with its
error, the internal-consistency ceiling and both ceiled conventions (labelled
with name and date) under ``brainscore`` and ``normalisations``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itbench.errors import SubmissionError
from itbench.harness import worker
from itbench.harness.device import resolve_device
from itbench.harness.record import BrainScoreResult, Normalisation, PerNeuroid, Scores
from itbench.harness.runcore import (
    ChildRun,
    Exposure,
    Log,
    RunOptions,
    RunState,
    base_job,
    resolve_size,
    run_child,
    run_provenance,
    store_in_parent_cache,
    trust_level,
    validate_predictions,
)
from itbench.harness.submission import Submission
from itbench.harness.untrusted import ChildStatus, UntrustedOutput, read_predictions, read_rows
from itbench.models.cache import outputs_dir, run_key
from itbench.scoring import brainscore, metrics
from itbench.scoring.benchmark import Benchmark

ID = "brainscore"
CV_SPLIT = "cv"  # the record's split label: every stimulus, cross-validated


class BrainScoreProtocol:
    """The protocol object the registry hands out (``itbench.harness.protocols``)."""

    id = ID
    title = "Brain-Score (10x stratified 90/10 cross-validation, PLS(25) on features)"

    def record_split(self, opts: RunOptions) -> str:
        """Every stimulus is scored, cross-validated: one record per submission, ``<id>.cv.json``."""
        return CV_SPLIT

    def check(self, bench: Benchmark, opts: RunOptions) -> None:
        """Nothing to refuse up front: a benchmark without object names fails its record, with the reason."""

    def run(self, sub: Submission, bench: Benchmark, opts: RunOptions, state: RunState, log: Log) -> None:
        """Features once (or one fit per split), the CV scores, the ceiling; fills ``state.record``."""
        state.begin(sub, bench)
        try:
            _run(_Plan.of(sub, bench, opts, state), state, log)
        except brainscore.ProtocolError as err:
            raise SubmissionError(str(err)) from None


PROTOCOL = BrainScoreProtocol()


@dataclass
class _Plan:
    """One submission under the protocol: what every child is told, and the stimuli in CV order."""

    sub: Submission
    bench: Benchmark
    opts: RunOptions
    job: dict[str, Any]
    fit_key: str
    ids: np.ndarray
    responses: np.ndarray
    objects: np.ndarray

    @classmethod
    def of(cls, sub: Submission, bench: Benchmark, opts: RunOptions, state: RunState) -> _Plan:
        device = resolve_device(opts.device)
        size = resolve_size(sub, opts.size, device)
        params = sub.params_for(size)
        state.provenance.update(run_provenance(opts, device, size, params))
        fit_key = run_key(
            sub.code_hash(), bench.checksum, params, opts.seed, size, bench.id, trust_level(opts)
        )
        ids, responses, objects = _stimuli(bench)
        return cls(
            sub, bench, opts, base_job(sub, opts, bench, device, size), fit_key, ids, responses, objects
        )

    @property
    def features_file(self) -> Path:
        """The parent's cache of this submission's features (as PLS coordinates) on these stimuli."""
        ids_hash = hashlib.sha1("\n".join(self.ids).encode()).hexdigest()
        return outputs_dir(self.sub.id) / f"{run_key(self.fit_key, 'brainscore-coordinates', ids_hash)}.npy"


def _run(plan: _Plan, state: RunState, log: Log) -> None:
    splits = brainscore.cv_splits(plan.objects)
    features = _features(plan, state.provenance, log)
    if features is not None:
        n_components: int | None = min(brainscore.PLS_COMPONENTS, features.shape[1])
        log(f"PLS({n_components}) on {features.shape[1]} feature coordinates, {len(splits)} splits ...")
        score = _pls_cv(features, plan, splits)
    else:
        n_components = None
        score = _per_split_fits(plan, splits, state.provenance, log)
    ceiling = None
    if plan.bench.source.trials is not None:
        values, stim, reps = brainscore.trial_table(plan.bench.source.trials)
        ceiling = brainscore.internal_consistency(values, stim, reps)
    _fill_record(state, score, ceiling, n_components, plan)


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


# --- features: one child shown no responses ---------------------------------------


def _features(plan: _Plan, provenance: dict[str, Any], log: Log) -> np.ndarray | None:
    """PLS-ready features of every stimulus (cached), or None when the model offers none."""
    path = plan.features_file
    if plan.opts.use_cache and path.exists():
        provenance["predictions_cached"] = True
        log(f"using cached features of {plan.sub.id}")
        return np.load(path, allow_pickle=False)
    log(f"loading all {len(plan.ids)} images ...")
    images = plan.bench.source.stimuli.load_images(list(plan.ids)).numpy()
    n = len(plan.ids)

    def write(workdir: Path, restorable: bool) -> None:
        np.save(workdir / worker.EVAL_IMAGES, images)

    def read(workdir: Path, status: ChildStatus) -> np.ndarray | None:
        return _read_features(workdir, status, n, plan.sub.id) if status.features else None

    job = {**plan.job, "mode": "features"}
    features, _status = run_child(
        ChildRun(plan.sub, job, Exposure.nothing(), write, read), plan.opts, provenance, log
    )
    if features is not None and plan.opts.use_cache:
        store_in_parent_cache(path, features, plan.sub, plan.opts, log)
    return features


def max_feature_bytes(n: int) -> int:
    """The most a features file of ``n`` stimuli may hold: n x n float64 (plus its header).

    This is the parent's bound: whatever width a child claims, no more is read.
    """
    return n * n * 8 + 4096


def _read_features(workdir: Path, status: ChildStatus, n: int, sub_id: str) -> np.ndarray:
    """The child's features as PLS coordinates: as sent when narrow, from their Gram matrix when wide."""
    try:
        if status.gram:
            gram = read_predictions(workdir / worker.GRAM, (n, n))
            _check_finite(gram, sub_id)
            return brainscore.coordinates_of_gram(gram)
        out = read_rows(workdir / worker.FEATURES, n, max_feature_bytes(n))
    except UntrustedOutput as err:
        raise SubmissionError(
            f"submission '{sub_id}': {err}",
            f"features(images) must return ({n}, n_features); at most {n} features are sent as they are, "
            "wider ones as their Gram matrix",
        ) from None
    feats = out.astype(np.float64)
    _check_finite(feats, sub_id)
    return feats


def _check_finite(values: np.ndarray, sub_id: str) -> None:
    if not np.isfinite(values).all():
        raise SubmissionError(f"submission '{sub_id}': features(images) contain NaN or inf")


def _pls_cv(
    features: np.ndarray, plan: _Plan, splits: list[tuple[np.ndarray, np.ndarray]]
) -> brainscore.CVScore:
    """Brain-Score's PLS on the features; degenerate features end the run with a reason, not a traceback."""
    with np.errstate(all="ignore"):
        centred = features - features.mean(axis=0)
        if not np.isfinite(centred).all():
            raise SubmissionError(f"submission '{plan.sub.id}': features(images) overflow when centred")
    if not np.any(centred):
        raise SubmissionError(
            f"submission '{plan.sub.id}': features(images) are the same for every image "
            "(rank 0 after centring), so PLS has nothing to fit"
        )
    try:
        return brainscore.pls_cv(features, plan.responses, splits)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        raise SubmissionError(
            f"submission '{plan.sub.id}': PLS could not be fitted on its features ({type(err).__name__}); "
            "they are probably degenerate on some split"
        ) from None


# --- per-split fits: one child per split, shown that split's train responses -------


def _per_split_fits(
    plan: _Plan, splits: list[tuple[np.ndarray, np.ndarray]], provenance: dict[str, Any], log: Log
) -> brainscore.CVScore:
    """A model without features: fitted by its own ``fit`` on each split's train stimuli (one child each)."""
    meta = plan.bench.source.stimuli.metadata
    categories = (
        meta.loc[plan.ids, "category_name"].astype(str).to_numpy()
        if "category_name" in meta.columns
        else np.full(len(plan.ids), "unknown")
    )
    neuroids = [str(n) for n in plan.bench.neuroid_ids]
    images = plan.bench.source.stimuli.load_images(list(plan.ids)).numpy()
    count = [0]

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        count[0] += 1
        log(f"split {count[0]}/{len(splits)}: fitting {plan.sub.id} on {len(train)} stimuli ...")
        labels = {"stimulus_id": plan.ids, "object_name": plan.objects, "category_name": categories}
        meta_train = {k: [str(v) for v in values[train]] for k, values in labels.items()}

        def write(workdir: Path, restorable: bool) -> None:
            worker.write_train(
                workdir, images[train], plan.responses[train], {**meta_train, "neuroid_id": neuroids}
            )
            np.save(workdir / worker.EVAL_IMAGES, images[test])

        def read(workdir: Path, status: ChildStatus) -> np.ndarray:
            return read_predictions(workdir / worker.PREDICTIONS, (len(test), len(neuroids)))

        shown = Exposure.responses_of(plan.bench, plan.ids[train], keep=False)
        pred, _status = run_child(
            ChildRun(plan.sub, plan.job, shown, write, read), plan.opts, provenance, log
        )
        return validate_predictions(pred, len(test), len(neuroids), plan.sub.id)

    return brainscore.score_predictions(predict, plan.responses, splits)


# --- the record -------------------------------------------------------------------


def _fill_record(
    state: RunState,
    score: brainscore.CVScore,
    ceiling: brainscore.Ceiling | None,
    n_components: int | None,
    plan: _Plan,
) -> None:
    block = brainscore.summary(score, ceiling, n_components)
    state.record.brainscore = BrainScoreResult.model_validate(block)
    scored = _scores(score, ceiling, plan.bench, len(plan.ids))
    labelled = {
        **metrics.definitions(scored["scores"]),
        **block["normalisations"],
    }  # itbench's, then Brain-Score's
    state.record.normalisations = {k: Normalisation.model_validate(v) for k, v in labelled.items()}
    state.record.scores = Scores.model_validate(scored["scores"])
    state.record.per_neuroid = PerNeuroid.model_validate(scored["per_neuroid"])


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
    none_ci = dict.fromkeys(("mean_ev", "median_ev", "mean_r", "median_r", "normalized_r"))
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
            "ci": none_ci,
        },
        "per_neuroid": {
            "neuroid_id": [str(i) for i in bench.neuroid_ids],
            "r": [f(v) for v in per_neuroid_r],
            "ev": [None] * len(per_neuroid_r),
            "ceiling": [f(v) for v in ceiling.per_neuroid] if ceiling else None,
        },
    }
