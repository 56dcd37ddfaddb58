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
* **Normalised score**: per neuroid ``r / ceiling`` (NaN where the ceiling is
  not positive); the headline is ``median_r / median ceiling`` as Brain-Score
  reports it (a ratio of medians, robust to neuroids with tiny ceilings).
* **Confidence intervals** resample *images* with replacement (the neuroids are
  fixed: they are the population the benchmark is about) and report percentile
  intervals. The normalised score's interval resamples the same images in the
  trial-level data, so ceiling and score move together.
"""

from __future__ import annotations

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
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_normalized_ci",
    "explained_variance",
    "normalized_r",
    "pearson_r",
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


def normalized_r(r: Any, ceiling: Any) -> NormalizedR:
    """``r / ceiling`` per neuroid (NaN where ceiling <= 0) and ``median r / median ceiling``."""
    r = np.asarray(r, dtype=np.float64)
    c = np.asarray(ceiling, dtype=np.float64)
    if r.shape != c.shape:
        raise MetricInputError(
            f"r has shape {r.shape} but ceiling has shape {c.shape}",
            hint="pass one r and one ceiling per neuroid",
        )
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        per = np.where(c > 0, r / c, np.nan)
        score = float(np.nanmedian(r) / np.nanmedian(c))
    return NormalizedR(per, score)


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
    """Headline normalised score for each weight vector (resample)."""
    n_splits, n, m = half_a.shape
    r = _weighted_corr(w, p, t)
    # every split's half-means are resampled with the same image weights
    a2 = half_a.transpose(1, 0, 2).reshape(n, n_splits * m)
    b2 = half_b.transpose(1, 0, 2).reshape(n, n_splits * m)
    split_r = _weighted_corr(w, a2, b2).reshape(len(w), n_splits, m)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        ceiling = np.nanmean(spearman_brown(split_r), axis=1)
        return np.nanmedian(r, axis=-1) / np.nanmedian(ceiling, axis=-1)


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
    """Percentile CI of ``median r / median ceiling`` over image resamples.

    The same resampled images are used for the predictions and for the trials
    (the split-half means of a resampled image set are the resampled split-half
    means, so the splits are drawn once, with ``split_seed``).
    """
    _check_boot(n_boot, alpha)
    p, t = _pair(pred, target)
    tr = _aligned_trials(trials, *p.shape)
    half_a, half_b = _split_half_means(tr, n_splits, split_seed)
    w = _counts(bootstrap_indices(p.shape[0], n_boot, seed))
    chunk = max(1, int(5e7 // (half_a.size + p.size)))
    stats = [_boot_normalized(w[s : s + chunk], p, t, half_a, half_b) for s in range(0, n_boot, chunk)]
    return _percentile_ci(np.concatenate(stats), alpha)


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
    same images and neuroids, in order; see :func:`trials_array`) adds the ceiling and the
    normalised score; without it those are ``None``. A constant-target neuroid
    has EV and r ``None`` (see the module docstring). ``n_boot=0`` skips the
    confidence intervals (all ``None``).
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
    tr = None
    if trials is not None:
        tr = _aligned_trials(trials, n, m)
    ceiling = split_half_ceiling(tr, n_splits=n_splits, seed=seed) if tr is not None else None
    with _quiet():
        scores: dict[str, Any] = {
            "mean_ev": _json_float(np.nanmean(ev)),
            "median_ev": _json_float(np.nanmedian(ev)),
            "mean_r": _json_float(np.nanmean(r)),
            "median_r": _json_float(np.nanmedian(r)),
            "ceiling": _json_float(np.nanmedian(ceiling)) if ceiling is not None else None,
            "normalized_r": _json_float(normalized_r(r, ceiling).score) if ceiling is not None else None,
            "n_neuroids": int(m),
            "n_images": int(n),
            "n_nan_r": int(np.isnan(r).sum()),
        }
    ci: dict[str, Any] = dict.fromkeys((*STATS, "normalized_r"))
    if n_boot:
        w = _counts(bootstrap_indices(n, n_boot, seed))
        for name in STATS:
            ci[name] = list(_percentile_ci(_named_stat(name, w, p, t), alpha))
        if tr is not None:
            ci["normalized_r"] = list(
                bootstrap_normalized_ci(
                    p, t, tr, n_boot=n_boot, seed=seed, alpha=alpha, n_splits=n_splits, split_seed=seed
                )
            )
    scores["ci"] = ci
    per_neuroid = {
        "neuroid_id": ids,
        "ev": _json_list(ev),
        "r": _json_list(r),
        "ceiling": _json_list(ceiling) if ceiling is not None else None,
    }
    return {"scores": scores, "per_neuroid": per_neuroid}
