"""Per-neuroid scores, split-half ceilings and bootstrap confidence intervals.

Everything here works on plain arrays: ``pred`` and ``target`` are float arrays
of shape ``(n_images, n_neuroids)`` (a 1-D array is one neuroid; leading extra
dimensions are treated as batch dimensions, which is how the bootstrap calls the
same functions on many resamples at once). Torch tensors and xarray objects are
accepted and converted to float64 numpy.

Conventions (the choices a reader of a score needs to know):

* **Explained variance** is ``sklearn.metrics.explained_variance_score`` per
  neuroid, ``1 - Var(target - pred) / Var(target)``. ``explained_variance``
  takes sklearn's ``force_finite`` flag with sklearn's default (``True``): a
  constant target column scores 1.0 if predicted perfectly and 0.0 otherwise,
  exactly as sklearn does. :func:`summarize` instead reports such a neuroid as
  NaN (undefined), because a score of 0 for a site that did not vary on the
  split would be a silent fabrication; NaNs are counted (``n_nan_r``: a constant
  target always has NaN r too) and all aggregates are NaN-aware. A constant
  *prediction* of a varying target has a well-defined EV of 0.
* **Pearson r** is ``scipy.stats.pearsonr`` per neuroid. A constant column in
  either argument gives NaN (scipy's convention), never 0 and never an error.
* A column holding any non-finite value (a model that emitted NaN/inf) gives
  NaN for that neuroid in both metrics rather than poisoning the others.
* **Ceiling** is Brain-Score's split-half internal consistency: repetitions are
  split at random into two halves, each half is averaged per image, the two
  half-means are correlated across images per neuroid (Pearson), the
  correlation is Spearman-Brown corrected (``2r / (1 + r)``) and the corrected
  values are averaged over splits. The per-neuroid ceiling is kept; the
  aggregate ceiling is the **median over neuroids**.
* **Normalised r** (``normalized_r``, the headline, "noise-corrected r"): per
  neuroid ``r / sqrt(ceiling)``; the headline is ``median r / sqrt(median
  ceiling)`` (a ratio of medians, as before, robust to neuroids with tiny
  ceilings). The split-half ceiling estimates the *reliability* of the
  trial-averaged response (a variance fraction), and the largest correlation any
  model can reach with a noisy average is its square root, so a model that
  predicts the noise-free signal scores about 1 (issue 19). Until 2026-12-03
  itbench's headline was ``median r / median ceiling`` (:func:`r_over_ceiling`),
  which puts that ideal model at ``1 / sqrt(ceiling)`` (about 1.14 at a ceiling
  of 0.78); records keep it as ``r_over_ceiling``.
* **FEVE** (fraction of explainable variance explained, as the Sensorium
  benchmark defines it): per neuroid ``1 - (MSE - noise) / (Var(y) - noise)``
  with ``y`` the trial-averaged response, ``MSE`` the mean squared error of the
  prediction (offset and scale count), ``Var(y)`` its variance over images and
  ``noise`` the trial-level noise variance of the mean (per image the variance
  over repetitions, ddof 1, divided by their number; averaged over images).
  For balanced repetitions this is Sensorium's trial-level formula. The ideal
  model scores about 1, the mean predictor exactly 0; NaN where ``Var(y) <=
  noise``. Aggregate: the **median over neuroids** (``feve``).
* **Paired comparisons** between submissions use one fixed set of image
  resamples per benchmark split (:func:`shared_resample_indices`: derived from
  the split's stimulus ids and a fixed seed, independent of image order and of
  the run's ``--seed``). Each record stores its mean r (and normalised r) on
  those resamples (:func:`bootstrap_summary`), so the difference between two
  submissions can be bootstrapped exactly from their records alone
  (:func:`paired_difference`, :func:`rank_groups`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from itbench.errors import DataError, ItbenchError

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = [
    "STATS",
    "MetricInputError",
    "NormalizedR",
    "PairedDifference",
    "bootstrap_ci",
    "bootstrap_feve_ci",
    "bootstrap_indices",
    "bootstrap_normalized_ci",
    "bootstrap_summary",
    "definitions",
    "explained_variance",
    "feve",
    "noise_variance",
    "normalized_r",
    "paired_difference",
    "pearson_r",
    "r_over_ceiling",
    "rank_groups",
    "shared_resample_indices",
    "spearman_brown",
    "split_half_ceiling",
    "summarize",
    "trials_array",
]


class MetricInputError(ItbenchError, ValueError):
    """Predictions, targets or trials have shapes or contents that cannot be scored."""


# --------------------------------------------------------------------------- inputs


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's 'all-NaN slice' / 'mean of empty slice' warnings: NaN is the answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _as_float(name: str, a: Any) -> np.ndarray:
    """Convert numpy/torch/xarray/list input to float64 numpy; 1-D means one neuroid."""
    if hasattr(a, "detach"):  # torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    a = np.asarray(getattr(a, "values", a))
    if a.dtype.kind not in "fiub":
        raise MetricInputError(
            f"{name} must be numeric, got dtype {a.dtype}",
            hint="pass an array of shape (n_images, n_neuroids)",
        )
    a = a.astype(np.float64, copy=False)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim < 2:
        raise MetricInputError(
            f"{name} must have shape (n_images, n_neuroids), got a scalar",
            hint="pass an array of shape (n_images, n_neuroids)",
        )
    return a


def _pair(pred: Any, target: Any, min_images: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (pred, target) pair: same shape, enough images to correlate."""
    p, t = _as_float("pred", pred), _as_float("target", target)
    if p.shape != t.shape:
        raise MetricInputError(
            f"pred has shape {p.shape} but target has shape {t.shape}",
            hint="predictions must be (n_images, n_neuroids) in the same image and neuroid order as the responses",
        )
    if p.shape[-2] < min_images:
        raise MetricInputError(
            f"need at least {min_images} images to score, got {p.shape[-2]}",
            hint="score a split with more images",
        )
    return p, t


def _constant(a: np.ndarray) -> np.ndarray:
    """True for columns (along the image axis) whose finite values are all identical.

    Tested exactly, as scipy does: a mean-subtracted constant column is not
    always exactly zero in floating point, so a variance test would miss it.
    """
    if not np.isnan(a).any():
        return (a == a[..., :1, :]).all(axis=-2)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmax(a, axis=-2) == np.nanmin(a, axis=-2)


def _finite_cols(*arrays: np.ndarray) -> np.ndarray:
    """True for neuroids whose columns are finite in every array."""
    ok = np.ones(arrays[0].shape[:-2] + arrays[0].shape[-1:], dtype=bool)
    for a in arrays:
        ok &= np.isfinite(a).all(axis=-2)
    return ok


# --------------------------------------------------------------------------- metrics


def explained_variance(pred: Any, target: Any, force_finite: bool = True) -> np.ndarray:
    """Per-neuroid explained variance, as ``sklearn.metrics.explained_variance_score``.

    Note the argument order (``pred`` first, as everywhere in itbench) is the
    reverse of sklearn's ``(y_true, y_pred)``. ``force_finite`` has sklearn's
    meaning: with ``True`` a constant target gives 1.0 (perfect prediction) or
    0.0; with ``False`` it gives NaN (0/0) or -inf. Columns with non-finite
    values give NaN.
    """
    p, t = _pair(pred, target, min_images=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = t - p
        num = np.mean((diff - diff.mean(axis=-2, keepdims=True)) ** 2, axis=-2)
        den = np.mean((t - t.mean(axis=-2, keepdims=True)) ** 2, axis=-2)
        if force_finite:
            ev = np.ones_like(num)
            valid = (den != 0) & (num != 0)
            ev[valid] = 1.0 - num[valid] / den[valid]
            ev[(num != 0) & (den == 0)] = 0.0
        else:
            ev = 1.0 - num / den
    return np.where(_finite_cols(p, t), ev, np.nan)


def pearson_r(pred: Any, target: Any) -> np.ndarray:
    """Per-neuroid Pearson correlation across images, as ``scipy.stats.pearsonr``.

    Constant or non-finite columns give NaN (never 0, never an exception).
    """
    p, t = _pair(pred, target)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        pc = p - p.mean(axis=-2, keepdims=True)
        tc = t - t.mean(axis=-2, keepdims=True)
        # normalise first, as scipy does, so large values cannot overflow the product
        pc /= np.linalg.norm(pc, axis=-2, keepdims=True)
        tc /= np.linalg.norm(tc, axis=-2, keepdims=True)
        r = np.clip(np.sum(pc * tc, axis=-2), -1.0, 1.0)
    bad = _constant(p) | _constant(t) | ~_finite_cols(p, t)
    return np.where(bad, np.nan, r)


def _masked_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r along axis -2 over the rows where both are finite (pairwise complete)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.all():
        return pearson_r(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = ok.sum(axis=-2, keepdims=True)
        a0, b0 = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
        ac = np.where(ok, a - a0.sum(axis=-2, keepdims=True) / n, 0.0)
        bc = np.where(ok, b - b0.sum(axis=-2, keepdims=True) / n, 0.0)
        va, vb = (ac**2).sum(axis=-2), (bc**2).sum(axis=-2)
        r = np.clip((ac * bc).sum(axis=-2) / np.sqrt(va * vb), -1.0, 1.0)
        amax = np.where(ok, a, -np.inf).max(axis=-2)
        amin = np.where(ok, a, np.inf).min(axis=-2)
        bmax = np.where(ok, b, -np.inf).max(axis=-2)
        bmin = np.where(ok, b, np.inf).min(axis=-2)
    bad = (n[..., 0, :] < 2) | (amax == amin) | (bmax == bmin)
    return np.where(bad, np.nan, r)


# --------------------------------------------------------------------------- ceilings


def trials_array(da: xr.DataArray, stimulus_ids: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
    """Turn a trial-level assembly into an array ``(n_images, n_reps, n_neuroids)``.

    ``da`` has dims ``presentation`` x ``neuroid`` with a ``stimulus_id`` coord
    (and usually ``repetition``) on ``presentation``. Rows come out in the
    order of ``stimulus_ids`` (default: order of first appearance), so the
    result lines up with predictions for the same images. Within an image,
    trials are ordered by ``repetition`` (then by position) and packed into
    slots ``0..k-1``; images with fewer repetitions than the largest count are
    padded with NaN, which :func:`split_half_ceiling` understands (each image
    splits its own trials into halves). A size-1 extra dimension (e.g. a
    single ``time_bin``) is squeezed away.
    """
    import pandas as pd  # local: only needed for this conversion

    for extra in [d for d in da.dims if d not in ("presentation", "neuroid")]:
        if da.sizes[extra] != 1:
            raise DataError(
                f"trial assembly has extra dimension {extra!r} of size {da.sizes[extra]}",
                hint="select one time bin (e.g. da.isel(time_bin=0)) before computing ceilings",
            )
        da = da.isel({extra: 0})
    if set(da.dims) != {"presentation", "neuroid"}:
        raise DataError(
            f"trial assembly must have dims ('presentation', 'neuroid'), got {da.dims}",
            hint="load it with itbench.data.assembly.load_assembly",
        )
    if "stimulus_id" not in da.coords:
        raise DataError(
            "trial assembly has no 'stimulus_id' coordinate on 'presentation'",
            hint="ceilings need trial-level data with stimulus_id (and repetition) coords",
        )
    da = da.transpose("presentation", "neuroid")
    stim = np.asarray(da["stimulus_id"].values)
    frame = pd.DataFrame({"stimulus_id": stim, "pos": np.arange(len(stim))})
    if "repetition" in da.coords:
        frame["rep"] = np.asarray(da["repetition"].values)
    else:
        frame["rep"] = 0
    order = pd.unique(stim) if stimulus_ids is None else np.asarray(list(stimulus_ids))
    index = pd.Index(order)
    if not index.is_unique:
        raise MetricInputError("stimulus_ids contains duplicates", hint="pass each image once")
    frame["row"] = index.get_indexer(frame["stimulus_id"])
    missing = np.setdiff1d(order, stim)
    if len(missing):
        raise DataError(
            f"{len(missing)} requested stimuli have no trials, e.g. {missing[:3].tolist()}",
            hint="score only images present in the trial-level assembly",
        )
    frame = frame[frame["row"] >= 0].sort_values(["row", "rep", "pos"], kind="stable")
    frame["slot"] = frame.groupby("row").cumcount()
    values = np.asarray(da.values, dtype=np.float64)
    out = np.full((len(order), int(frame["slot"].max()) + 1, values.shape[1]), np.nan)
    out[frame["row"].to_numpy(), frame["slot"].to_numpy()] = values[frame["pos"].to_numpy()]
    return out


def spearman_brown(r: np.ndarray | float, factor: float = 2.0) -> np.ndarray:
    """Spearman-Brown prophecy: reliability of a ``factor``-times longer measurement."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1.0 + (factor - 1.0) * r)


def _check_trials(trials: Any) -> np.ndarray:
    """Validate a trials array ``(n_images, n_reps, n_neuroids)``."""
    if hasattr(trials, "dims"):
        trials = trials_array(trials)
    t = np.asarray(trials, dtype=np.float64)
    if t.ndim != 3:
        raise MetricInputError(
            f"trials must have shape (n_images, n_reps, n_neuroids), got {t.shape}",
            hint="convert a trial-level assembly with itbench.scoring.metrics.trials_array",
        )
    if t.shape[1] < 2:
        raise MetricInputError(
            f"need at least 2 repetitions per image for a split-half ceiling, got {t.shape[1]}",
            hint="this benchmark has no repeated trials; report scores without a ceiling",
        )
    return t


def _aligned_trials(trials: Any, n_images: int, n_neuroids: int) -> np.ndarray:
    """Trials that must line up with predictions: an array of matching shape, not an assembly."""
    if hasattr(trials, "dims"):
        raise MetricInputError(
            "trials given as an assembly: its image order may differ from the predictions'",
            hint="convert with itbench.scoring.metrics.trials_array(da, stimulus_ids=<the predictions' stimulus ids>)",
        )
    t = _check_trials(trials)
    if t.shape[0] != n_images or t.shape[2] != n_neuroids:
        raise MetricInputError(
            f"trials {t.shape} do not match predictions ({n_images}, {n_neuroids})",
            hint="trials must be (n_images, n_reps, n_neuroids) for the same images and neuroids, in order",
        )
    return t


def _split_half_means(trials: np.ndarray, n_splits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-means for every split: two arrays ``(n_splits, n_images, n_neuroids)``.

    Split ``s`` draws one permutation of the repetition slots,
    ``np.random.default_rng(seed).permutation(n_reps)`` (the s-th draw), shared
    by all images as in Brain-Score. Each image (and neuroid) takes its valid
    trials in that permuted order: the first ``floor(k/2)`` go to half A, the
    rest to half B. With equal counts this is exactly "slots perm[:R//2] vs the
    rest"; with unequal counts every image with k >= 2 still gets two non-empty
    halves. Images with fewer than 2 valid trials yield NaN (left out).
    """
    rng = np.random.default_rng(seed)
    n_reps = trials.shape[1]
    valid = np.isfinite(trials)
    complete = bool(valid.all())
    k = valid.sum(axis=1, keepdims=True)
    halves_a, halves_b = [], []
    for _ in range(n_splits):
        perm = rng.permutation(n_reps)
        if complete:  # every image has all repetitions: split the slots directly
            halves_a.append(trials[:, perm[: n_reps // 2]].mean(axis=1))
            halves_b.append(trials[:, perm[n_reps // 2 :]].mean(axis=1))
            continue
        v = valid[:, perm]
        x = np.where(v, trials[:, perm], 0.0)
        rank = np.cumsum(v, axis=1, dtype=np.int32)  # 1-based position among this image's valid trials
        in_a = v & (rank <= k // 2)
        in_b = v & ~in_a
        with np.errstate(invalid="ignore", divide="ignore"):
            halves_a.append((x * in_a).sum(axis=1) / in_a.sum(axis=1))
            halves_b.append((x * in_b).sum(axis=1) / in_b.sum(axis=1))
    return np.stack(halves_a), np.stack(halves_b)


def split_half_ceiling(trials: Any, n_splits: int = 10, seed: int = 0) -> np.ndarray:
    """Per-neuroid split-half internal consistency, Spearman-Brown corrected.

    ``trials``: ``(n_images, n_reps, n_neuroids)``, NaN-padded where images have
    fewer repetitions (see :func:`trials_array`; an xarray trial assembly is
    converted with it). For each of ``n_splits`` random splits of the
    repetitions into halves: mean per image within each half, Pearson r across
    images per neuroid, corrected with ``2r / (1 + r)``; the corrected values
    are averaged over splits. Aggregate with the median over neuroids.
    """
    t = _check_trials(trials)
    if n_splits < 1:
        raise MetricInputError(f"n_splits must be >= 1, got {n_splits}", hint="use the default 10")
    a, b = _split_half_means(t, n_splits, seed)
    corrected = spearman_brown(_masked_corr(a, b))
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(corrected, axis=0)


class NormalizedR(NamedTuple):
    """Ceiling-normalised correlation: per neuroid and the headline ratio of medians."""

    per_neuroid: np.ndarray
    score: float


def _ratio(r: Any, ceiling: Any, power: float) -> NormalizedR:
    """``r / ceiling**power`` per neuroid (NaN where ceiling <= 0) and the same of the medians."""
    r = np.asarray(r, dtype=np.float64)
    c = np.asarray(ceiling, dtype=np.float64)
    if r.shape != c.shape:
        raise MetricInputError(
            f"r has shape {r.shape} but ceiling has shape {c.shape}",
            hint="pass one r and one ceiling per neuroid",
        )
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        per = np.where(c > 0, r / np.abs(c) ** power, np.nan)
        med = np.nanmedian(c) if c.size else np.nan
        score = float(np.nanmedian(r) / med**power) if med > 0 else float("nan")
    return NormalizedR(per, score)


def normalized_r(r: Any, ceiling: Any) -> NormalizedR:
    """Noise-corrected r: ``r / sqrt(ceiling)`` per neuroid, headline ``median r / sqrt(median ceiling)``.

    The split-half ceiling is a reliability (variance fraction); its square
    root bounds the correlation of any model with the noisy averaged response,
    so the ideal model scores about 1 here. NaN where the ceiling is not positive.
    """
    return _ratio(r, ceiling, 0.5)


def r_over_ceiling(r: Any, ceiling: Any) -> NormalizedR:
    """itbench's headline until 2026-12-03: ``r / ceiling``, ``median r / median ceiling``.

    Not bounded by 1: the ideal model scores ``1 / sqrt(ceiling)``. Kept so old
    numbers stay readable (records' ``r_over_ceiling``).
    """
    return _ratio(r, ceiling, 1.0)


def noise_variance(trials: Any) -> np.ndarray:
    """Per image and neuroid, the trial-noise variance of the mean response ``(n_images, n_neuroids)``.

    The variance over repetitions (ddof 1, NaN padding ignored) divided by the
    number of repetitions: the error variance of the trial average the model is
    scored against. NaN for an image with fewer than 2 repetitions.
    """
    t = _check_trials(trials)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        k = np.isfinite(t).sum(axis=1).astype(np.float64)
        var = np.nanvar(t, axis=1, ddof=1)
        return np.where(k >= 2, var / k, np.nan)


def _feve_from(mse: np.ndarray, var: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``1 - (mse - noise) / (var - noise)``, NaN where nothing is explainable (``var <= noise``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        explainable = var - noise
        return np.where(explainable > 0, 1.0 - (mse - noise) / explainable, np.nan)


def feve(pred: Any, target: Any, trials: Any) -> np.ndarray:
    """Per-neuroid fraction of explainable variance explained (Sensorium's FEVE).

    ``target`` is the trial-averaged response, ``trials`` the same images'
    trials ``(n_images, n_reps, n_neuroids)``. ``1 - (MSE - noise) / (Var(y) -
    noise)`` with ``noise`` the mean over images of :func:`noise_variance`:
    the noise-free-signal model scores about 1, the mean predictor 0.
    """
    p, t = _pair(pred, target, min_images=2)
    if p.ndim != 2:
        raise MetricInputError(f"pred must be 2-D, got shape {p.shape}", hint="(n_images, n_neuroids)")
    nv = noise_variance(_aligned_trials(trials, *p.shape))
    with np.errstate(invalid="ignore", over="ignore"), _quiet():
        mse = np.mean((t - p) ** 2, axis=0)
        var = np.var(t, axis=0)
        out = _feve_from(mse, var, np.nanmean(nv, axis=0))
    return np.where(_finite_cols(p, t), out, np.nan)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_indices(n_images: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Image indices of ``n_boot`` resamples with replacement, ``(n_boot, n_images)``.

    Every bootstrap in this module draws its resamples here, so intervals
    computed with the same seed use the same resampled image sets.
    """
    return np.random.default_rng(seed).integers(0, n_images, size=(n_boot, n_images))


def _counts(idx: np.ndarray) -> np.ndarray:
    """How often each image appears in each resample: ``(n_boot, n_images)`` float."""
    n_boot, n = idx.shape
    flat = idx + n * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _weighted_corr(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r per column for every weight vector (row of ``w``) at once.

    A bootstrap resample is the same as weighting each image by how often it
    was drawn, so all resamples reduce to five matrix products (``w @ ...``)
    instead of materialising ``n_boot`` copies of the data. Rows that are not
    finite in both arrays are left out (pairwise complete). Columns are
    centred first to keep the moment formulas free of cancellation.
    """
    ok = (np.isfinite(a) & np.isfinite(b)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        a0 = np.where(ok > 0, a - np.nanmean(np.where(ok > 0, a, np.nan), axis=0), 0.0)
        b0 = np.where(ok > 0, b - np.nanmean(np.where(ok > 0, b, np.nan), axis=0), 0.0)
        n = w @ ok
        ma, mb = (w @ a0) / n, (w @ b0) / n
        va = (w @ (a0 * a0)) / n - ma**2
        vb = (w @ (b0 * b0)) / n - mb**2
        cov = (w @ (a0 * b0)) / n - ma * mb
        r = np.clip(cov / np.sqrt(va * vb), -1.0, 1.0)
        # a resample that hits only equal values has (numerically) zero variance
        tol_a = 1e-12 * (a0**2).sum(axis=0) / ok.sum(axis=0)
        tol_b = 1e-12 * (b0**2).sum(axis=0) / ok.sum(axis=0)
    return np.where((va <= tol_a) | (vb <= tol_b) | (n < 2), np.nan, r)


def _weighted_ev(w: np.ndarray, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Explained variance for every weight vector at once (NaN for constant target)."""
    d = target - pred
    with np.errstate(invalid="ignore", divide="ignore"):
        d0 = d - d.mean(axis=0)
        t0 = target - target.mean(axis=0)
        n = w.sum(axis=1, keepdims=True)
        vd = (w @ (d0 * d0)) / n - ((w @ d0) / n) ** 2
        vt = (w @ (t0 * t0)) / n - ((w @ t0) / n) ** 2
        ev = 1.0 - vd / vt
        tol = 1e-12 * (t0**2).mean(axis=0)
    return np.where((vt <= tol) | ~_finite_cols(pred, target), np.nan, ev)


def _agg(values: np.ndarray, how: str) -> np.ndarray:
    """NaN-aware mean/median over the neuroid (last) axis."""
    with _quiet():
        return np.nanmean(values, axis=-1) if how == "mean" else np.nanmedian(values, axis=-1)


#: Named statistics for :func:`bootstrap_ci`, computed on the weighted fast path.
STATS = ("mean_ev", "median_ev", "mean_r", "median_r")


def _named_stat(name: str, w: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One of :data:`STATS` for each resample, from image weights ``w``."""
    how, metric = name.split("_")
    values = _weighted_ev(w, p, t) if metric == "ev" else _weighted_corr(w, p, t)
    return _agg(values, how)


def _percentile_ci(stats: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    """Percentile interval, ignoring resamples whose statistic is undefined."""
    stats = np.asarray(stats, dtype=np.float64)
    if not np.isfinite(stats).any():
        return None, None
    lo, hi = np.nanpercentile(stats[np.isfinite(stats)], [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _check_boot(n_boot: int, alpha: float) -> None:
    """Reject impossible bootstrap settings with a message, not a numpy error."""
    if n_boot < 1:
        raise MetricInputError(f"n_boot must be >= 1, got {n_boot}", hint="use e.g. 1000")
    if not 0 < alpha < 1:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}", hint="0.05 gives a 95% interval")


def bootstrap_ci(
    pred: Any,
    target: Any,
    stat_fn: str | Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float | None, float | None]:
    """Percentile CI of a statistic over image resamples (with replacement).

    ``stat_fn`` is either a name from :data:`STATS` (fast path: weighted moments,
    no copies) or a callable taking *batched* resamples ``pred_b, target_b`` of
    shape ``(b, n_images, n_neuroids)`` and returning ``(b,)``; the metrics in
    this module accept such batches, e.g.
    ``lambda p, t: np.nanmean(pearson_r(p, t), axis=-1)``. Resamples come from
    :func:`bootstrap_indices` (same seed -> same resamples on both paths).
    Returns ``(lo, hi)``; ``(None, None)`` if the statistic is never defined.
    """
    _check_boot(n_boot, alpha)
    p, t = _pair(pred, target)
    if p.ndim != 2:
        raise MetricInputError(f"pred must be 2-D, got shape {p.shape}", hint="(n_images, n_neuroids)")
    idx = bootstrap_indices(p.shape[0], n_boot, seed)
    if isinstance(stat_fn, str):
        if stat_fn not in STATS:
            raise MetricInputError(f"unknown statistic {stat_fn!r}", hint=f"use one of {STATS} or a callable")
        return _percentile_ci(_named_stat(stat_fn, _counts(idx), p, t), alpha)
    chunk = max(1, int(5e5 // p.size))  # small batches: cache-friendly, bounded memory
    stats = []
    for start in range(0, n_boot, chunk):
        rows = idx[start : start + chunk]
        out = np.asarray(stat_fn(p[rows], t[rows]), dtype=np.float64)
        if out.shape != (len(rows),):
            raise MetricInputError(
                f"stat_fn returned shape {out.shape} for a batch of {len(rows)} resamples",
                hint="stat_fn gets (b, n_images, n_neuroids) arrays and must return shape (b,)",
            )
        stats.append(out)
    return _percentile_ci(np.concatenate(stats), alpha)


def _boot_normalized(
    w: np.ndarray, p: np.ndarray, t: np.ndarray, half_a: np.ndarray, half_b: np.ndarray
) -> np.ndarray:
    """Both ceiled scores for each weight vector (resample): ``(n_w, 2)``.

    Column 0 is the headline ``median r / sqrt(median ceiling)``, column 1 the
    old ``median r / median ceiling`` (same resamples, same split-halves).
    """
    n_splits, n, m = half_a.shape
    r = _weighted_corr(w, p, t)
    # every split's half-means are resampled with the same image weights
    a2 = half_a.transpose(1, 0, 2).reshape(n, n_splits * m)
    b2 = half_b.transpose(1, 0, 2).reshape(n, n_splits * m)
    split_r = _weighted_corr(w, a2, b2).reshape(len(w), n_splits, m)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        ceiling = np.nanmedian(np.nanmean(spearman_brown(split_r), axis=1), axis=-1)
        median_r = np.nanmedian(r, axis=-1)
        positive = ceiling > 0
        bounded = np.where(positive, median_r / np.sqrt(np.abs(ceiling)), np.nan)
        old = np.where(positive, median_r / ceiling, np.nan)
    return np.stack([bounded, old], axis=1)


#: Resamples that share one draw of split-halves (see :func:`_normalized_resamples`).
SPLIT_BLOCK = 50


def _normalized_resamples(
    w: np.ndarray, p: np.ndarray, t: np.ndarray, trials: np.ndarray, n_splits: int, split_seed: int
) -> np.ndarray:
    """Ceiled scores per resample ``(n_boot, 2)`` (see :func:`_boot_normalized`), split-halves redrawn.

    Resamples are taken in blocks of :data:`SPLIT_BLOCK`; block ``g`` uses its
    own ``n_splits`` random split-halves of the repetitions (seed
    ``(split_seed, g)``). Every resample thus varies both the images and the
    split of trials that estimates the ceiling, so the interval includes the
    ceiling's uncertainty; blocks keep the cost at one split-half computation
    per block instead of per resample (resamples within a block are still
    independent draws of images; only the Monte Carlo error is affected).
    """
    out = []
    for g, start in enumerate(range(0, len(w), SPLIT_BLOCK)):
        seed_g = int(np.random.SeedSequence([split_seed, g]).generate_state(1)[0])
        half_a, half_b = _split_half_means(trials, n_splits, seed_g)
        block = w[start : start + SPLIT_BLOCK]
        chunk = max(1, int(5e7 // (half_a.size + p.size)))
        out += [
            _boot_normalized(block[s : s + chunk], p, t, half_a, half_b) for s in range(0, len(block), chunk)
        ]
    return np.concatenate(out) if out else np.empty((0, 2))


def bootstrap_normalized_ci(
    pred: Any,
    target: Any,
    trials: Any,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_splits: int = 10,
    split_seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile CI of ``median r / sqrt(median ceiling)`` over images and split-halves together.

    The same resampled images are used for the predictions and for the trials
    (the split-half means of a resampled image set are the resampled split-half
    means), and the repetition split-halves are redrawn for every block of
    resamples (:func:`_normalized_resamples`), so the interval reflects the
    uncertainty of the ceiling as well as that of the raw score.
    """
    _check_boot(n_boot, alpha)
    p, t = _pair(pred, target)
    tr = _aligned_trials(trials, *p.shape)
    w = _counts(bootstrap_indices(p.shape[0], n_boot, seed))
    return _percentile_ci(_normalized_resamples(w, p, t, tr, n_splits, split_seed)[:, 0], alpha)


def _weighted_feve(w: np.ndarray, p: np.ndarray, t: np.ndarray, nv: np.ndarray) -> np.ndarray:
    """Median FEVE over neuroids for every weight vector: MSE, Var(y) and noise all resampled.

    ``nv`` is :func:`noise_variance` per image; each resample's noise is the
    weighted mean over the images it drew, so the noise estimate varies with
    the images exactly as the response variance does.
    """
    ok = np.isfinite(nv).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        n = w.sum(axis=1, keepdims=True)
        d = t - p
        t0 = t - t.mean(axis=0)
        mse = (w @ (d * d)) / n
        var = (w @ (t0 * t0)) / n - ((w @ t0) / n) ** 2
        noise = (w @ np.where(ok > 0, nv, 0.0)) / (w @ ok)
        values = _feve_from(mse, var, noise)
    values = np.where(_finite_cols(p, t), values, np.nan)
    return _agg(values, "median")


def bootstrap_feve_ci(
    pred: Any, target: Any, trials: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float | None, float | None]:
    """Percentile CI of the median FEVE over image resamples (noise variance resampled too)."""
    _check_boot(n_boot, alpha)
    p, t = _pair(pred, target)
    nv = noise_variance(_aligned_trials(trials, *p.shape))
    w = _counts(bootstrap_indices(p.shape[0], n_boot, seed))
    chunk = max(1, int(5e7 // (3 * p.size)))
    stats = [_weighted_feve(w[s : s + chunk], p, t, nv) for s in range(0, n_boot, chunk)]
    return _percentile_ci(np.concatenate(stats), alpha)


# --------------------------------------------------------------------------- paired bootstrap

#: Identifies how :func:`bootstrap_summary` draws its resamples; stored in records.
PAIRED_METHOD = "itbench.paired-bootstrap/1"
#: The fixed seed of the shared resamples (never the run's ``--seed``: pairing needs one set).
PAIRED_SEED = 414
PAIRED_N_BOOT = 1000
#: Records store per-resample values to 6 decimals, so their differences are known to ~1e-6;
#: a CI that misses 0 by less than this is treated as covering it (no "real" rounding noise).
PAIRED_RESOLUTION = 1e-5


StimulusIds = Sequence[Any] | np.ndarray


def _stimulus_ids(stimulus_ids: StimulusIds) -> np.ndarray:
    ids = np.asarray([str(s) for s in stimulus_ids])
    if len(np.unique(ids)) != len(ids):
        raise MetricInputError("stimulus_ids contains duplicates", hint="pass each image once")
    return ids


def resample_key(stimulus_ids: StimulusIds, n_boot: int = PAIRED_N_BOOT, seed: int = PAIRED_SEED) -> str:
    """sha1 naming one set of shared resamples: method, seed, n_boot and the sorted stimulus ids."""
    ids = sorted(_stimulus_ids(stimulus_ids).tolist())
    h = hashlib.sha1(f"{PAIRED_METHOD}\n{seed}\n{n_boot}\n".encode())
    h.update("\n".join(ids).encode())
    return h.hexdigest()


def shared_resample_indices(
    stimulus_ids: StimulusIds, n_boot: int = PAIRED_N_BOOT, seed: int = PAIRED_SEED
) -> tuple[str, np.ndarray]:
    """The benchmark split's shared image resamples: ``(key, indices (n_boot, n_images))``.

    Drawn over the stimulus ids in sorted order with a generator seeded from
    :func:`resample_key`, then mapped to positions in ``stimulus_ids``: every
    submission scored on the same images gets the same resampled image sets,
    whatever order its predictions come in.
    """
    _check_boot(n_boot, 0.05)
    ids = _stimulus_ids(stimulus_ids)
    key = resample_key(ids, n_boot, seed)
    order = np.argsort(ids, kind="stable")
    rng = np.random.default_rng(int(key[:16], 16))
    idx_sorted = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    return key, order[idx_sorted]


def bootstrap_summary(
    pred: Any,
    target: Any,
    stimulus_ids: StimulusIds,
    trials: Any = None,
    n_boot: int = PAIRED_N_BOOT,
    n_splits: int = 10,
) -> dict[str, Any]:
    """Mean r (and normalised r) of one submission on the split's shared resamples.

    What a record stores so that the page can compare two submissions by a
    paired bootstrap without their predictions: ``key`` (which resamples),
    ``mean_r`` per resample and, where trials exist, ``normalized_r`` per
    resample with split-halves also shared (seeded from the key). Values are
    rounded to 6 decimals (a 1000-resample record grows by ~20 kB).
    """
    p, t = _pair(pred, target)
    key, idx = shared_resample_indices(stimulus_ids, n_boot)
    if len(idx[0]) != p.shape[0]:
        raise MetricInputError(
            f"{len(idx[0])} stimulus ids for {p.shape[0]} images", hint="pass one id per prediction row"
        )
    w = _counts(idx)
    mean_r = _named_stat("mean_r", w, p, t)
    norm = None
    if trials is not None:
        tr = _aligned_trials(trials, *p.shape)
        norm = _normalized_resamples(w, p, t, tr, n_splits, int(key[:8], 16))[:, 0]

    def rounded(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else round(float(v), 6) for v in a]

    return {
        "method": PAIRED_METHOD,
        "key": key,
        "n_boot": int(n_boot),
        "mean_r": rounded(mean_r),
        "normalized_r": rounded(norm) if norm is not None else None,
    }


class PairedDifference(NamedTuple):
    """``a - b`` with the percentile CI of its paired bootstrap; ``tied`` when the CI covers 0.

    ``resolution``: how close to 0 the interval must come to count as covering
    it (the precision of the stored per-resample values).
    """

    delta: float
    low: float | None
    high: float | None
    resolution: float = 0.0

    @property
    def defined(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def tied(self) -> bool:
        """Not distinguishable at this level: the interval contains 0 (or is undefined)."""
        if self.low is None or self.high is None:
            return True
        return self.low <= self.resolution and self.high >= -self.resolution

    @property
    def sign(self) -> int:
        """+1 if ``a`` is significantly better, -1 if significantly worse, 0 if tied."""
        if self.tied:
            return 0
        return 1 if (self.low or 0.0) > self.resolution else -1


def paired_difference(
    a: Sequence[float | None] | np.ndarray,
    b: Sequence[float | None] | np.ndarray,
    point_a: float,
    point_b: float,
    alpha: float = 0.05,
    resolution: float = PAIRED_RESOLUTION,
) -> PairedDifference:
    """Paired bootstrap of ``a - b``: per-resample differences on the same resamples.

    ``a`` and ``b`` are two submissions' statistics on the *same* resamples
    (:func:`bootstrap_summary`); the interval is the percentile interval of
    their difference (resamples where either is undefined are left out), the
    point estimate is ``point_a - point_b`` from the full data. An interval
    within ``resolution`` of 0 counts as covering it.
    """
    x = np.asarray([np.nan if v is None else v for v in a], dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in b], dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise MetricInputError(
            f"paired samples differ in shape: {x.shape} vs {y.shape}",
            hint="both must come from the same shared resamples (same key and n_boot)",
        )
    _check_boot(max(len(x), 1), alpha)
    lo, hi = _percentile_ci(x - y, alpha)
    return PairedDifference(float(point_a) - float(point_b), lo, hi, resolution)


def rank_groups(adjacent_tied: Sequence[bool]) -> list[tuple[int, int]]:
    """Tie groups of a ranked list from its adjacent comparisons.

    ``adjacent_tied[i]`` says whether entries ``i`` and ``i + 1`` (0-based, in
    rank order) cannot be told apart. Runs of tied neighbours form one group;
    returns ``(first, last)`` 1-based ranks per entry, e.g. ``[True, False]``
    -> ``[(1, 2), (1, 2), (3, 3)]``. Chaining is deliberate and conservative:
    if 1 ~ 2 and 2 ~ 3, no rank among the three is claimed.
    """
    n = len(adjacent_tied) + 1
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(n):
        if i == n - 1 or not adjacent_tied[i]:
            out += [(start + 1, i + 1)] * (i - start + 1)
            start = i + 1
    return out


# --------------------------------------------------------------------------- summary


def _json_float(x: Any) -> float | None:
    """Float for JSON; NaN/inf become None (JSON has no NaN)."""
    x = float(x)
    return x if np.isfinite(x) else None


def _json_list(a: np.ndarray) -> list[float | None]:
    """Per-neuroid values for JSON (None where undefined)."""
    return [_json_float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _json_ids(ids: Sequence[Any] | np.ndarray) -> list[Any]:
    """Neuroid ids as JSON-native values (numpy scalars unwrapped, bytes decoded)."""
    out = []
    for v in ids:
        v = v.item() if hasattr(v, "item") else v
        out.append(v.decode("latin-1") if isinstance(v, bytes) else v)
    return out


#: Confidence-interval keys of :func:`summarize` (``STATS`` plus the ceiled scores).
CI_KEYS = (*STATS, "normalized_r", "r_over_ceiling", "feve")


def _ceiled(
    p: np.ndarray, t: np.ndarray, r: np.ndarray, tr: np.ndarray, n_splits: int, seed: int
) -> dict[str, Any]:
    """Ceiling, both ceiled r's and FEVE of one split: per neuroid and aggregated."""
    ceiling = split_half_ceiling(tr, n_splits=n_splits, seed=seed)
    per_feve = feve(p, t, tr)
    with _quiet():
        return {
            "ceiling": ceiling,
            "feve": per_feve,
            "scores": {
                "ceiling": _json_float(np.nanmedian(ceiling)),
                "normalized_r": _json_float(normalized_r(r, ceiling).score),
                "r_over_ceiling": _json_float(r_over_ceiling(r, ceiling).score),
                "feve": _json_float(np.nanmedian(per_feve)),
            },
        }


def _cis(
    p: np.ndarray, t: np.ndarray, tr: np.ndarray | None, n_boot: int, seed: int, alpha: float, n_splits: int
) -> dict[str, Any]:
    """Percentile CIs of every summary score; the ceiled ones carry the ceiling's uncertainty."""
    ci: dict[str, Any] = dict.fromkeys(CI_KEYS)
    if not n_boot:
        return ci
    w = _counts(bootstrap_indices(p.shape[0], n_boot, seed))
    for name in STATS:
        ci[name] = list(_percentile_ci(_named_stat(name, w, p, t), alpha))
    if tr is not None:
        both = _normalized_resamples(w, p, t, tr, n_splits, seed)
        ci["normalized_r"] = list(_percentile_ci(both[:, 0], alpha))
        ci["r_over_ceiling"] = list(_percentile_ci(both[:, 1], alpha))
        ci["feve"] = list(bootstrap_feve_ci(p, t, tr, n_boot=n_boot, seed=seed, alpha=alpha))
    return ci


def summarize(
    pred: Any,
    target: Any,
    trials: Any = None,
    neuroid_ids: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_splits: int = 10,
) -> dict[str, dict[str, Any]]:
    """Scores and per-neuroid values of one split, as the result record stores them.

    Returns ``{"scores": {...}, "per_neuroid": {...}}`` with exactly the keys of
    the ``itbench.record/1`` schema (docs/internals.md); JSON-serialisable, NaN
    written as ``None``. ``trials`` (``(n_images, n_reps, n_neuroids)`` for the
    same images and neuroids, in order; see :func:`trials_array`) adds the
    ceiling, the normalised r (both conventions) and FEVE; without it those are
    ``None``. A constant-target neuroid has EV and r ``None`` (see the module
    docstring). ``n_boot=0`` skips the confidence intervals (all ``None``).
    """
    p, t = _pair(pred, target)
    if p.ndim != 2:
        raise MetricInputError(f"pred must be 2-D, got shape {p.shape}", hint="(n_images, n_neuroids)")
    n, m = p.shape
    ids = list(range(m)) if neuroid_ids is None else _json_ids(neuroid_ids)
    if len(ids) != m:
        raise MetricInputError(
            f"{len(ids)} neuroid ids for {m} neuroids", hint="pass one id per prediction column"
        )
    ev = explained_variance(p, t, force_finite=False)
    ev[~np.isfinite(ev) | _constant(t)] = np.nan
    r = pearson_r(p, t)
    tr = _aligned_trials(trials, n, m) if trials is not None else None
    ceiled = _ceiled(p, t, r, tr, n_splits, seed) if tr is not None else None
    with _quiet():
        scores: dict[str, Any] = {
            "mean_ev": _json_float(np.nanmean(ev)),
            "median_ev": _json_float(np.nanmedian(ev)),
            "mean_r": _json_float(np.nanmean(r)),
            "median_r": _json_float(np.nanmedian(r)),
            **dict.fromkeys(("ceiling", "normalized_r", "r_over_ceiling", "feve")),
            **(ceiled["scores"] if ceiled else {}),
            "n_neuroids": int(m),
            "n_images": int(n),
            "n_nan_r": int(np.isnan(r).sum()),
        }
    scores["ci"] = _cis(p, t, tr, n_boot, seed, alpha, n_splits)
    per_neuroid = {
        "neuroid_id": ids,
        "ev": _json_list(ev),
        "r": _json_list(r),
        "ceiling": _json_list(ceiled["ceiling"]) if ceiled else None,
        "feve": _json_list(ceiled["feve"]) if ceiled else None,
    }
    return {"scores": scores, "per_neuroid": per_neuroid}


#: itbench's own ceiled scores, labelled like Brain-Score's (``itbench.scoring.brainscore.NORMALISATIONS``);
#: keys are the ``scores`` fields they describe. Records carry them under ``normalisations``.
DEFINITIONS: dict[str, dict[str, str]] = {
    "normalized_r": {
        "name": "noise-corrected r (itbench headline)",
        "formula": "median r / sqrt(median ceiling)",
        "dates": "itbench since 2026-12-03 (issue 19)",
        "definition": "per neuroid r / sqrt(split-half ceiling), aggregated as a ratio of medians; the "
        "ceiling is a reliability, its square root bounds r, so a model predicting the noise-free "
        "signal scores about 1",
    },
    "r_over_ceiling": {
        "name": "r over ceiling (itbench headline before 2026-12-03)",
        "formula": "median r / median ceiling",
        "dates": "itbench until 2026-12-03",
        "definition": "r divided by the reliability itself: not bounded by 1, the ideal model scores "
        "1 / sqrt(ceiling); kept so old numbers stay readable",
    },
    "feve": {
        "name": "fraction of explainable variance explained (FEVE)",
        "formula": "median of 1 - (MSE - noise) / (Var(y) - noise)",
        "dates": "itbench since 2026-12-03 (issue 19); Sensorium benchmark definition",
        "definition": "per neuroid, y the trial-averaged response, noise the trial-noise variance of the "
        "mean (variance over repetitions, ddof 1, over their number, averaged over images); bounded "
        "by 1 for the noise-free signal, 0 for the mean predictor; median over neuroids",
    },
}


def definitions(scores: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """itbench's ceiled scores with their labels and the values in ``scores`` (a record's ``normalisations``)."""
    return {f"itbench_{key}": {**label, "value": scores.get(key)} for key, label in DEFINITIONS.items()}
