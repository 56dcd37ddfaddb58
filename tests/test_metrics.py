"""Metrics and ceilings against sklearn / scipy, hand-computed values and simulations."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from sklearn.metrics import explained_variance_score

from itbench.errors import DataError, ItbenchError
from itbench.scoring import metrics as M


def _data(n: int = 64, m: int = 168, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, m)) * rng.uniform(0.5, 3, m) + rng.normal(size=m)
    pred = 0.7 * target + noise * rng.normal(size=(n, m))
    return pred, target


def _scipy_r(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input
        return np.array([scipy.stats.pearsonr(pred[:, j], target[:, j])[0] for j in range(pred.shape[1])])


# --------------------------------------------------------------------------- EV and r


@pytest.mark.parametrize("shape", [(64, 168), (10, 1), (500, 3)])
def test_ev_and_r_match_sklearn_and_scipy(shape):
    pred, target = _data(*shape)
    ev = M.explained_variance(pred, target)
    ref = explained_variance_score(target, pred, multioutput="raw_values")
    np.testing.assert_allclose(ev, ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(M.pearson_r(pred, target), _scipy_r(pred, target), atol=1e-6, rtol=0)


def test_one_dimensional_input_is_one_neuroid():
    pred, target = _data(30, 1)
    assert M.explained_variance(pred[:, 0], target[:, 0]).shape == (1,)
    assert M.pearson_r(pred[:, 0], target[:, 0])[0] == pytest.approx(
        scipy.stats.pearsonr(pred[:, 0], target[:, 0])[0]
    )


def test_torch_and_xarray_inputs_are_accepted():
    torch = pytest.importorskip("torch")
    pred, target = _data(20, 4)
    r_np = M.pearson_r(pred, target)
    np.testing.assert_allclose(
        M.pearson_r(torch.from_numpy(pred).float(), xr.DataArray(target)), r_np, atol=1e-6
    )


def test_constant_columns_follow_sklearn_and_scipy_without_warnings():
    pred, target = _data(40, 6)
    pred[:, 0] = 3.0  # constant prediction
    target[:, 1] = 0.1  # constant target (a mean of 0.1s is not exactly 0.1)
    target[:, 2] = 5.0
    pred[:, 2] = 5.0  # constant target, perfectly predicted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = M.pearson_r(pred, target)
        ev = M.explained_variance(pred, target)
        ev_raw = M.explained_variance(pred, target, force_finite=False)
    assert np.isnan(r[:3]).all() and np.isfinite(r[3:]).all()
    np.testing.assert_array_equal(np.isnan(r), np.isnan(_scipy_r(pred, target)))
    np.testing.assert_allclose(
        ev, explained_variance_score(target, pred, multioutput="raw_values"), atol=1e-6
    )
    assert ev[0] == pytest.approx(0.0, abs=1e-12)  # constant prediction explains nothing
    assert ev[2] == 1.0  # sklearn's force_finite convention for a perfectly predicted constant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_raw = explained_variance_score(target, pred, multioutput="raw_values", force_finite=False)
    np.testing.assert_array_equal(np.isnan(ev_raw), np.isnan(ref_raw))
    ok = np.isfinite(ref_raw)
    np.testing.assert_allclose(ev_raw[ok], ref_raw[ok], atol=1e-6)


def test_non_finite_column_gives_nan_for_that_neuroid_only():
    pred, target = _data(30, 5)
    pred[4, 1] = np.nan
    pred[2, 3] = np.inf
    r, ev = M.pearson_r(pred, target), M.explained_variance(pred, target)
    assert np.isnan(r[[1, 3]]).all() and np.isnan(ev[[1, 3]]).all()
    good = [0, 2, 4]
    np.testing.assert_allclose(r[good], _scipy_r(pred[:, good], target[:, good]), atol=1e-9)


def test_batched_inputs_equal_a_loop():
    pred, target = _data(25, 7)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 25, size=(5, 25))
    batched = M.pearson_r(pred[idx], target[idx])
    looped = np.stack([M.pearson_r(pred[i], target[i]) for i in idx])
    np.testing.assert_allclose(batched, looped, atol=1e-12)


@pytest.mark.parametrize(
    "pred, target",
    [
        (np.zeros((5, 3)), np.zeros((5, 4))),
        (np.zeros((1, 3)), np.zeros((1, 3))),
        (np.array(["a", "b"]), np.zeros(2)),
    ],
)
def test_bad_inputs_raise_a_user_error(pred, target):
    with pytest.raises(M.MetricInputError) as err:
        M.pearson_r(pred, target)
    assert isinstance(err.value, ItbenchError) and err.value.hint


# --------------------------------------------------------------------------- ceilings


def test_ceiling_hand_computed_two_repetitions():
    # 2 reps -> the only split is {rep0} vs {rep1}; r([1,2,3],[1,3,2]) = 0.5 -> 2*0.5/1.5
    trials = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])[:, :, None]
    np.testing.assert_allclose(M.split_half_ceiling(trials, n_splits=7), [2 / 3], rtol=1e-12)


def _reference_ceiling(trials: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Loop version of the documented protocol, with scipy's pearsonr."""
    rng = np.random.default_rng(seed)
    n_img, n_rep, n_neu = trials.shape
    values = np.zeros((n_splits, n_neu))
    for s in range(n_splits):
        perm = rng.permutation(n_rep)
        for j in range(n_neu):
            a, b = [], []
            for i in range(n_img):
                valid = [slot for slot in perm if np.isfinite(trials[i, slot, j])]
                half = len(valid) // 2
                a.append(np.mean(trials[i, valid[:half], j]))
                b.append(np.mean(trials[i, valid[half:], j]))
            r = scipy.stats.pearsonr(a, b)[0]
            values[s, j] = 2 * r / (1 + r)
    return values.mean(axis=0)


def test_ceiling_equals_independent_loop_computation():
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(30, 1, 4))
    trials = signal + rng.normal(size=(30, 7, 4))
    np.testing.assert_allclose(
        M.split_half_ceiling(trials, 5, seed=11), _reference_ceiling(trials, 5, 11), atol=1e-10
    )
    # unequal repetition counts (NaN padding): each image splits its own trials
    trials[::3, 5:, :] = np.nan
    trials[1, 2:, 0] = np.nan
    np.testing.assert_allclose(
        M.split_half_ceiling(trials, 5, seed=2), _reference_ceiling(trials, 5, 2), atol=1e-10
    )


def test_ceiling_recovers_analytic_reliability():
    # signal variance 1, trial noise variance 4, 20 reps: reliability of the 20-trial
    # mean is 1 / (1 + 4/20) = 0.8333 (Spearman-Brown of the 10-vs-10 split-half r)
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(2000, 1, 20))
    trials = signal + 2.0 * rng.normal(size=(2000, 20, 20))
    ceiling = M.split_half_ceiling(trials, n_splits=10)
    assert np.median(ceiling) == pytest.approx(1 / (1 + 4 / 20), abs=0.015)


def test_ceiling_rejects_single_repetition():
    with pytest.raises(M.MetricInputError):
        M.split_half_ceiling(np.zeros((5, 1, 2)))


def _trial_assembly() -> xr.DataArray:
    # image "b" has 3 reps, "a" 2, listed out of order; one time_bin of size 1
    stim = ["b", "a", "b", "a", "b"]
    rep = [2, 1, 0, 0, 1]
    values = np.arange(10, dtype=float).reshape(5, 2, 1)
    return xr.DataArray(
        values,
        dims=("presentation", "neuroid", "time_bin"),
        coords={
            "stimulus_id": ("presentation", stim),
            "repetition": ("presentation", rep),
            "neuroid_id": ("neuroid", ["n0", "n1"]),
        },
    )


def test_trials_array_orders_and_pads():
    arr = M.trials_array(_trial_assembly(), stimulus_ids=["a", "b"])
    assert arr.shape == (2, 3, 2)
    np.testing.assert_array_equal(arr[0, :, 0], [6.0, 2.0, np.nan])  # a: rep0 (row 3), rep1 (row 1)
    np.testing.assert_array_equal(arr[1, :, 1], [5.0, 9.0, 1.0])  # b: rep0, rep1, rep2
    assert M.trials_array(_trial_assembly()).shape == (2, 3, 2)  # default order: first appearance


def test_trials_array_errors():
    da = _trial_assembly()
    with pytest.raises(DataError):
        M.trials_array(da, stimulus_ids=["a", "zzz"])
    with pytest.raises(DataError):
        M.trials_array(da.drop_vars("stimulus_id"))


def test_normalized_r_hand_values():
    r = np.array([0.2, 0.4, 0.6, np.nan])
    c = np.array([0.5, 0.8, -0.1, 0.9])
    out = M.r_over_ceiling(r, c)  # the headline until 2026-12-03; today's is in test_ceiling.py
    np.testing.assert_allclose(out.per_neuroid, [0.4, 0.5, np.nan, np.nan])
    assert out.score == pytest.approx(0.4 / 0.65)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_named_and_generic_paths_agree_and_are_fast():
    pred, target = _data(64, 168)
    t0 = time.perf_counter()
    fast = M.bootstrap_ci(pred, target, "mean_r", n_boot=1000, seed=4)
    elapsed = time.perf_counter() - t0
    generic = M.bootstrap_ci(
        pred, target, lambda p, t: np.nanmean(M.pearson_r(p, t), axis=-1), n_boot=1000, seed=4
    )
    np.testing.assert_allclose(fast, generic, atol=1e-9)
    ev_fast = M.bootstrap_ci(pred, target, "median_ev", n_boot=300, seed=1)
    ev_gen = M.bootstrap_ci(
        pred, target, lambda p, t: np.median(M.explained_variance(p, t), -1), n_boot=300, seed=1
    )
    np.testing.assert_allclose(ev_fast, ev_gen, atol=1e-9)
    assert elapsed < 1.0


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_images():
    widths = []
    for n in (40, 640):
        pred, target = _data(n, 20, seed=n)
        point = np.mean(M.pearson_r(pred, target))
        lo, hi = M.bootstrap_ci(pred, target, "mean_r", n_boot=500)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 4x narrower in theory


def test_bootstrap_rejects_bad_stat():
    pred, target = _data(10, 2)
    with pytest.raises(M.MetricInputError):
        M.bootstrap_ci(pred, target, "mean_rr")
    with pytest.raises(M.MetricInputError):
        M.bootstrap_ci(pred, target, lambda p, t: p.mean(), n_boot=10)


def test_normalized_bootstrap_at_unit_weights_is_the_point_estimate_and_ci_contains_it():
    rng = np.random.default_rng(5)
    signal = rng.normal(size=(80, 1, 12))
    trials = signal + rng.normal(size=(80, 10, 12))
    target = trials.mean(axis=1)
    pred = signal[:, 0] + 0.8 * rng.normal(size=(80, 12))
    point = M.normalized_r(M.pearson_r(pred, target), M.split_half_ceiling(trials, 10, seed=0)).score
    a, b = M._split_half_means(trials, 10, 0)
    at_ones = M._boot_normalized(np.ones((1, 80)), pred, target, a, b)[0, 0]
    assert at_ones == pytest.approx(point, rel=1e-9)
    lo, hi = M.bootstrap_normalized_ci(pred, target, trials, n_boot=300)
    assert lo < point < hi


# --------------------------------------------------------------------------- summarize


def test_summarize_schema_values_and_json():
    rng = np.random.default_rng(7)
    signal = rng.normal(size=(50, 1, 6))
    trials = signal + rng.normal(size=(50, 4, 6))
    target = trials.mean(axis=1)
    pred = signal[:, 0] + rng.normal(size=(50, 6))
    target[:, 5] = 1.0  # a silent site: undefined scores, counted
    trials[:, :, 5] = 1.0
    out = M.summarize(pred, target, trials, neuroid_ids=np.array([f"n{i}" for i in range(6)]), n_boot=200)
    json.dumps(out, allow_nan=False)
    s = out["scores"]
    assert set(s) == {
        "mean_ev",
        "median_ev",
        "mean_r",
        "median_r",
        "ceiling",
        "normalized_r",
        "r_over_ceiling",
        "feve",
        "n_neuroids",
        "n_images",
        "n_nan_r",
        "ci",
    }
    ceiled = {"normalized_r", "r_over_ceiling", "feve"}
    assert set(s["ci"]) == {"mean_ev", "median_ev", "mean_r", "median_r", *ceiled}
    assert set(out["per_neuroid"]) == {"neuroid_id", "ev", "r", "ceiling", "feve"}
    assert s["n_neuroids"] == 6 and s["n_images"] == 50 and s["n_nan_r"] == 1
    assert out["per_neuroid"]["neuroid_id"][0] == "n0"
    assert out["per_neuroid"]["r"][5] is None and out["per_neuroid"]["ev"][5] is None
    r = _scipy_r(pred[:, :5], target[:, :5])
    ev = explained_variance_score(target[:, :5], pred[:, :5], multioutput="raw_values")
    assert s["mean_r"] == pytest.approx(r.mean()) and s["median_ev"] == pytest.approx(np.median(ev))
    ceiling = M.split_half_ceiling(trials[:, :, :5])
    assert s["ceiling"] == pytest.approx(np.median(ceiling))
    assert s["normalized_r"] == pytest.approx(np.median(r) / np.sqrt(np.median(ceiling)))
    assert s["r_over_ceiling"] == pytest.approx(np.median(r) / np.median(ceiling))
    assert out["per_neuroid"]["feve"][5] is None  # nothing to explain at a silent site
    for key, (lo, hi) in s["ci"].items():
        assert lo <= s[key] <= hi


def test_summarize_without_trials_and_without_bootstrap():
    pred, target = _data(20, 3)
    out = M.summarize(pred, target, n_boot=0)
    assert out["scores"]["ceiling"] is None and out["scores"]["normalized_r"] is None
    assert out["per_neuroid"]["ceiling"] is None and out["per_neuroid"]["neuroid_id"] == [0, 1, 2]
    assert all(v is None for v in out["scores"]["ci"].values())
    with pytest.raises(M.MetricInputError):
        M.summarize(pred, target, neuroid_ids=["a"])
    with pytest.raises(M.MetricInputError):
        M.summarize(pred, target, trials=np.zeros((20, 4, 2)))
    with pytest.raises(M.MetricInputError, match="image order"):
        M.summarize(pred, target, trials=xr.DataArray(np.zeros((40, 3)), dims=("presentation", "neuroid")))


def test_ceiling_accepts_an_assembly_directly():
    da = _trial_assembly()
    np.testing.assert_allclose(M.split_half_ceiling(da), M.split_half_ceiling(M.trials_array(da)))
