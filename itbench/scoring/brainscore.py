"""Brain-Score's MajajHong2015public protocol, reimplemented so itbench and Brain-Score numbers mean the same.

Why: Table I's ``fixed-split`` protocol (fit on train, score val) is not what
Brain-Score reports as ``MajajHong2015public.IT-pls``; a user comparing the two
must know which protocol and which ceiling normalisation a number used. This
module is written from a reading of Brain-Score's code (brain-score/vision at
commit c642dbe, August 2026; no code copied):

- ``brainscore_vision/benchmarks/majajhong2015/benchmark.py``: the public IT
  and V4 benchmarks use the ``pls`` metric with
  ``crossvalidation_kwargs=dict(stratification_coord='object_name')`` on the
  repetition-averaged assembly, and the ``internal_consistency`` ceiling on the
  trial-level assembly;
- ``brainscore_vision/metrics/regression_correlation/metric.py``
  (``CrossRegressedCorrelation``, ``pls_regression``): ``train_size=0.9``;
  regression ``PLSRegression(n_components=25, scale=False)``; per neuroid
  ``scipy.stats.pearsonr`` between prediction and held-out responses; median
  over neuroids per split;
- ``brainscore_vision/metric_helpers/transformations.py`` (``Split``,
  ``CrossValidation``, ``standard_error_of_the_mean``): 10 splits,
  ``StratifiedShuffleSplit(n_splits=10, train_size=0.9, test_size=None,
  random_state=1)`` over stimuli stratified by ``object_name``; mean over
  splits; error = std over splits (xarray's, ddof=0) / sqrt(10);
- ``brainscore_vision/metrics/internal_consistency/ceiling.py``
  (``InternalConsistency``, ``_SplitHalvesConsistency``,
  ``SpearmanBrownCorrection``): split the *unique repetition values* with
  ``ShuffleSplit(n_splits=10, train_size=0.5, random_state=1)``, average each
  half per stimulus, Pearson r per neuroid across stimuli, Spearman-Brown
  ``2r / (1 + r)``, median over neuroids per split, mean over splits;
- ``brainscore_vision/benchmark_helpers/neural_common.py``
  (``explained_variance``): the ceiled score. Until PR #2169 (commit e376e306,
  merged 2026-01-13) it was ``(raw / ceiling) ** 2``; since then it is
  ``raw ** 2 / ceiling``, where ``raw`` is the split-mean of median r and
  ``ceiling`` the internal consistency above (aggregates, not per neuroid).

Where itbench cannot follow Brain-Score exactly, it says so: stimuli are
ordered by ``stimulus_id`` before splitting (Brain-Score's repetition
averaging groups and sorts by the tuple of presentation coordinates, which
starts with ``stimulus_id`` in the MajajHong2015 files, so the orders agree
there), and a stimulus without trials in one half is left out of that half's
correlation rather than producing NaN. The model side is the submission: a
model that exposes ``features(images)`` is read out with PLS(25) exactly as
Brain-Score maps a committed layer; any other model is fitted by its own
``fit`` on each split's train stimuli.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itbench.errors import ItbenchError
from itbench.linalg import GRAM_CHUNK, gram_matrix
from itbench.scoring.metrics import pearson_r

PROTOCOL = "brainscore"
N_SPLITS = 10
TRAIN_SIZE = 0.9
RANDOM_STATE = 1
STRATIFY_BY = "object_name"
PLS_COMPONENTS = 25

#: The two ceiled-score conventions, labelled with name and date (records and the page use these).
NORMALISATIONS: dict[str, dict[str, str]] = {
    "brainscore_pre2026": {
        "name": "Brain-Score ceiled, before PR #2169",
        "formula": "(r / ceiling)^2",
        "dates": "Brain-Score until 2026-01-13",
        "definition": "square of (raw r / internal-consistency ceiling); Brain-Score's explained_variance "
        "before PR #2169 (brainscore_vision/benchmark_helpers/neural_common.py)",
    },
    "brainscore_pr2169": {
        "name": "Brain-Score ceiled, since PR #2169",
        "formula": "r^2 / ceiling",
        "dates": "Brain-Score since 2026-01-13 (PR #2169, commit e376e306)",
        "definition": "raw r squared, divided by the internal-consistency ceiling (a reliability, i.e. a "
        "variance bound); Brain-Score's explained_variance since PR #2169",
    },
}


class ProtocolError(ItbenchError):
    """The data cannot be scored under Brain-Score's protocol (too few stimuli per object, no trials)."""


def normalisations(raw: float | None, ceiling: float | None) -> dict[str, dict[str, Any]]:
    """Both ceiled conventions of one raw r and one ceiling, each with its label; None where undefined."""
    out: dict[str, dict[str, Any]] = {}
    ok = raw is not None and ceiling is not None and math.isfinite(raw) and math.isfinite(ceiling)
    ok = ok and ceiling is not None and ceiling > 0
    for key, label in NORMALISATIONS.items():
        value = None
        if ok:
            assert raw is not None and ceiling is not None
            value = (raw / ceiling) ** 2 if key == "brainscore_pre2026" else raw**2 / ceiling
        out[key] = {**label, "value": value}
    return out


def cv_splits(
    object_names: Sequence[Any] | np.ndarray,
    n_splits: int = N_SPLITS,
    train_size: float = TRAIN_SIZE,
    random_state: int = RANDOM_STATE,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Brain-Score's splits: stratified shuffle splits over stimuli (positions in the given order)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    labels = np.asarray(object_names).astype(str)
    splitter = StratifiedShuffleSplit(
        n_splits=n_splits, train_size=train_size, test_size=None, random_state=random_state
    )
    try:
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels)]
    except ValueError as err:
        raise ProtocolError(
            f"cannot make {n_splits} stratified {train_size:.0%}/{1 - train_size:.0%} splits of "
            f"{len(labels)} stimuli over {len(set(labels))} objects: {err}",
            hint="Brain-Score's protocol needs at least 2 stimuli per object_name",
        ) from err


def pls_readout(n_components: int = PLS_COMPONENTS) -> Any:
    """Brain-Score's ``pls`` regression: ``PLSRegression(n_components=25, scale=False)``."""
    from sklearn.cross_decomposition import PLSRegression

    return PLSRegression(n_components=n_components, scale=False)


@dataclass
class CVScore:
    """Per split and per neuroid r, and Brain-Score's aggregates of them."""

    r: np.ndarray  # (n_splits, n_neuroids)
    split_scores: np.ndarray = field(init=False)  # median over neuroids, per split
    raw: float = field(init=False)  # mean over splits
    error: float = field(init=False)  # std over splits (ddof=0) / sqrt(n_splits)

    def __post_init__(self) -> None:
        with np.errstate(invalid="ignore"):
            self.split_scores = np.nanmedian(self.r, axis=1)
        self.raw = float(np.mean(self.split_scores))
        self.error = float(np.std(self.split_scores) / math.sqrt(len(self.split_scores)))


def score_predictions(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    responses: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
) -> CVScore:
    """Per split: ``predict(train_idx, test_idx)`` -> predictions of the test stimuli, Pearson r per neuroid."""
    y = np.asarray(responses, dtype=np.float64)
    rows = []
    for train, test in splits:
        pred = np.asarray(predict(train, test), dtype=np.float64)
        if pred.shape != (len(test), y.shape[1]):
            raise ProtocolError(
                f"predictions for a split have shape {pred.shape}, expected {(len(test), y.shape[1])}"
            )
        rows.append(pearson_r(pred, y[test]))
    return CVScore(np.stack(rows))


def gram_coordinates(features: np.ndarray, chunk: int = GRAM_CHUNK) -> np.ndarray:
    """Coordinates ``Z`` (N x N) of N feature rows with the same inner products: ``Z Z^T = X X^T``.

    Why: PLS (NIPALS) touches X only through inner products of its rows (the
    scores are ``X X^T u``, weight norms are ``sqrt(u^T X X^T u)``, centring and
    deflation are row combinations), so on ``Z`` it gives the same fit and
    predictions as on ``X`` while costing N x N instead of N x D. With pixels
    (D = 150,528) that is the difference between minutes and a second.
    """
    return coordinates_of_gram(gram_matrix(features, chunk))


def coordinates_of_gram(gram: np.ndarray) -> np.ndarray:
    """``Z`` with ``Z Z^T = G`` for a Gram matrix ``G`` (its eigenvectors scaled; negative noise clipped)."""
    eigval, eigvec = np.linalg.eigh(np.asarray(gram, dtype=np.float64))
    return eigvec * np.sqrt(np.clip(eigval, 0.0, None))


def pls_cv(
    features: np.ndarray,
    responses: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    n_components: int = PLS_COMPONENTS,
) -> CVScore:
    """Brain-Score's ``pls`` metric on features: PLS(25) fitted per split on train stimuli, r on test.

    Features wider than they are tall are replaced by :func:`gram_coordinates`
    first (same PLS fit and predictions, see there).
    """
    y = np.asarray(responses, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != y.shape[0]:
        raise ProtocolError(
            f"features {features.shape} do not match responses {y.shape}: one row per stimulus"
        )
    n = min(n_components, features.shape[1])
    if features.shape[1] > features.shape[0]:
        x = gram_coordinates(features)
    else:
        x = np.asarray(features, dtype=np.float64)

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = pls_readout(n).fit(x[train], y[train])
        return np.asarray(model.predict(x[test]))

    return score_predictions(predict, y, splits)


@dataclass
class Ceiling:
    """Brain-Score's internal consistency: per split and neuroid, and the aggregate."""

    per_split: np.ndarray  # (n_splits, n_neuroids), Spearman-Brown corrected
    split_medians: np.ndarray = field(init=False)
    value: float = field(init=False)  # mean over splits of the median over neuroids
    error: float = field(init=False)
    per_neuroid: np.ndarray = field(init=False)  # mean over splits (for the page's distributions)

    def __post_init__(self) -> None:
        with np.errstate(invalid="ignore"):
            self.split_medians = np.nanmedian(self.per_split, axis=1)
            self.per_neuroid = np.nanmean(self.per_split, axis=0)
        self.value = float(np.mean(self.split_medians))
        self.error = float(np.std(self.split_medians) / math.sqrt(len(self.split_medians)))


def _half_means(values: np.ndarray, codes: np.ndarray, n_stimuli: int, keep: np.ndarray) -> np.ndarray:
    """Mean per stimulus over the kept trials: (n_stimuli, n_neuroids), NaN where a stimulus has none."""
    sums = np.zeros((n_stimuli, values.shape[1]))
    np.add.at(sums, codes[keep], values[keep])
    counts = np.bincount(codes[keep], minlength=n_stimuli).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def internal_consistency(
    values: np.ndarray,
    stimulus_id: Sequence[Any] | np.ndarray,
    repetition: Sequence[Any] | np.ndarray,
    n_splits: int = N_SPLITS,
    random_state: int = RANDOM_STATE,
) -> Ceiling:
    """Brain-Score's ``internal_consistency`` ceiling of a trial-level assembly (presentation x neuroid)."""
    from sklearn.model_selection import ShuffleSplit

    from itbench.scoring.metrics import _masked_corr, spearman_brown

    v = np.asarray(values, dtype=np.float64)
    stim = np.asarray(stimulus_id).astype(str)
    reps = np.asarray(repetition)
    unique_reps = np.unique(reps)
    if len(unique_reps) < 2:
        raise ProtocolError(
            "the internal-consistency ceiling needs at least 2 repetitions",
            hint="this benchmark has no trials: Brain-Score's protocol reports no ceiling for it",
        )
    ids, codes = np.unique(stim, return_inverse=True)
    splitter = ShuffleSplit(n_splits=n_splits, train_size=0.5, test_size=None, random_state=random_state)
    rows = []
    for half_a, half_b in splitter.split(np.zeros(len(unique_reps))):
        a = _half_means(v, codes, len(ids), np.isin(reps, unique_reps[half_a]))
        b = _half_means(v, codes, len(ids), np.isin(reps, unique_reps[half_b]))
        rows.append(spearman_brown(_masked_corr(a, b)))
    return Ceiling(np.stack(rows))


def trial_table(trials: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values, stimulus_id and repetition of a trial-level DataArray (presentation x neuroid)."""
    if "repetition" not in trials.coords:
        raise ProtocolError(
            "the trial-level assembly has no repetition coordinate",
            hint="load it with itbench.data.assembly.add_repetition",
        )
    return (
        np.asarray(trials.values, dtype=np.float64),
        np.asarray(trials.coords["stimulus_id"].values).astype(str),
        np.asarray(trials.coords["repetition"].values),
    )


def summary(score: CVScore, ceiling: Ceiling | None, n_components: int | None) -> dict[str, Any]:
    """The ``brainscore`` block of a record: raw r with error, ceiling, both normalisations, settings."""

    def f(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    return {
        "raw_r": f(score.raw),
        "raw_r_error": f(score.error),
        "split_median_r": [f(x) for x in score.split_scores],
        "ceiling": f(ceiling.value) if ceiling else None,
        "ceiling_error": f(ceiling.error) if ceiling else None,
        "split_ceiling": [f(x) for x in ceiling.split_medians] if ceiling else None,
        "normalisations": normalisations(f(score.raw), f(ceiling.value) if ceiling else None),
        "settings": {
            "n_splits": int(score.r.shape[0]),
            "train_size": TRAIN_SIZE,
            "stratify_by": STRATIFY_BY,
            "random_state": RANDOM_STATE,
            "readout": f"PLSRegression(n_components={n_components}, scale=False) on the submission's features"
            if n_components
            else "the submission's own fit, once per split",
            "aggregate": "Pearson r per neuroid, median over neuroids per split, mean over splits, "
            "error std/sqrt(n_splits)",
            "ceiling": "internal consistency: 10 split-halves of the repetitions (ShuffleSplit, random_state=1), "
            "Spearman-Brown, median over neuroids, mean over splits",
        },
    }
