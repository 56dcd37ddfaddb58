"""itbench.scoring.brainscore against an independent computation written here (sklearn + scipy + pandas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.cross_decomposition import PLSRegression
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from itbench.scoring import brainscore


def _synthetic(
    n_objects: int = 8, per_object: int = 12, n_features: int = 40, n_neuroids: int = 15, reps: int = 8
):
    """Stimuli of known structure: responses are a linear map of features plus an object effect, and trials
    add noise of known variance, so the reliability of the trial mean is known in closed form."""
    rng = np.random.default_rng(7)
    n = n_objects * per_object
    objects = np.repeat([f"obj{k}" for k in range(n_objects)], per_object)
    ids = np.array([f"s{rng.integers(1e9):09d}" for _ in range(n)])
    x = rng.normal(size=(n, n_features))
    w = rng.normal(size=(n_features, n_neuroids)) / math.sqrt(n_features)
    signal = (
        x @ w + 0.5 * rng.normal(size=(n_objects, n_neuroids))[np.repeat(np.arange(n_objects), per_object)]
    )
    noise_sd = 1.5
    trials = signal[:, None, :] + noise_sd * rng.normal(size=(n, reps, n_neuroids))
    return ids, objects, x, signal, trials, noise_sd


def _independent_raw(x, y, objects, n_components=25):
    """Brain-Score's pls metric as its documentation and code describe it, written from scratch."""
    split = StratifiedShuffleSplit(n_splits=10, train_size=0.9, test_size=None, random_state=1)
    medians = []
    for train, test in split.split(np.zeros(len(objects)), objects):
        pls = PLSRegression(n_components=n_components, scale=False).fit(x[train], y[train])
        pred = pls.predict(x[test])
        rs = [scipy.stats.pearsonr(pred[:, j], y[test, j])[0] for j in range(y.shape[1])]
        medians.append(np.median(rs))
    medians = np.array(medians)
    return medians.mean(), medians.std() / np.sqrt(10), medians


def _independent_ceiling(trial_frame: pd.DataFrame, neuroids: list[str]):
    reps = np.unique(trial_frame["repetition"])
    split = ShuffleSplit(n_splits=10, train_size=0.5, test_size=None, random_state=1)
    medians = []
    for a, b in split.split(np.zeros(len(reps))):
        half_a = trial_frame[trial_frame["repetition"].isin(reps[a])].groupby("stimulus_id")[neuroids].mean()
        half_b = trial_frame[trial_frame["repetition"].isin(reps[b])].groupby("stimulus_id")[neuroids].mean()
        half_b = half_b.loc[half_a.index]
        rs = np.array([scipy.stats.pearsonr(half_a[c], half_b[c])[0] for c in neuroids])
        medians.append(np.median(2 * rs / (1 + rs)))
    return float(np.mean(medians)), float(np.std(medians) / np.sqrt(10))


def test_pls_cv_matches_an_independent_computation():
    ids, objects, x, _signal, trials, _ = _synthetic()
    y = trials.mean(axis=1)
    order = np.argsort(ids)  # itbench orders stimuli by stimulus_id before splitting
    x, y, objects = x[order], y[order], objects[order]
    score = brainscore.pls_cv(x, y, brainscore.cv_splits(objects))
    raw, err, medians = _independent_raw(x, y, objects)
    np.testing.assert_allclose(score.split_scores, medians, atol=1e-6)
    assert score.raw == pytest.approx(raw, abs=1e-6) and score.error == pytest.approx(err, abs=1e-6)
    assert score.raw > 0.5  # the features do carry the signal


def test_wide_features_give_the_same_pls_scores_as_sklearn_on_the_raw_features():
    """Features wider than the stimuli count (pixels) go through Gram coordinates: same numbers."""
    _ids, objects, x, _signal, trials, _ = _synthetic(n_objects=4, per_object=10, n_features=30)
    rng = np.random.default_rng(11)
    wide = np.hstack([x, 0.3 * rng.normal(size=(len(x), 2000))]).astype(np.float32)  # D = 2030 > N = 40
    y = trials.mean(axis=1)
    score = brainscore.pls_cv(wide, y, brainscore.cv_splits(objects))
    raw, err, medians = _independent_raw(wide.astype(np.float64), y, objects)
    np.testing.assert_allclose(score.split_scores, medians, atol=1e-6)
    assert score.raw == pytest.approx(raw, abs=1e-6) and score.error == pytest.approx(err, abs=1e-6)


def test_ceiling_matches_an_independent_computation_and_the_closed_form():
    ids, _objects, _x, signal, trials, noise_sd = _synthetic(per_object=40, reps=10)
    n, reps, m = trials.shape
    neuroids = [f"n{j}" for j in range(m)]
    perm = np.random.default_rng(3).permutation(n * reps)  # trials in any order, as in a real file
    frame = pd.DataFrame(trials.reshape(n * reps, m)[perm], columns=neuroids)
    frame["stimulus_id"] = np.repeat(ids, reps)[perm]
    frame["repetition"] = np.tile(np.arange(reps), n)[perm]
    ceiling = brainscore.internal_consistency(
        frame[neuroids].to_numpy(), frame["stimulus_id"], frame["repetition"]
    )
    value, err = _independent_ceiling(frame, neuroids)
    assert ceiling.value == pytest.approx(value, abs=1e-6) and ceiling.error == pytest.approx(err, abs=1e-6)
    # reliability of a mean of `reps` trials: var(signal) / (var(signal) + noise^2 / reps), per neuroid
    var_s = signal.var(axis=0)
    expected = np.median(var_s / (var_s + noise_sd**2 / reps))
    assert ceiling.value == pytest.approx(expected, abs=0.05)


def test_ceiling_with_missing_trials_uses_the_stimuli_present_in_both_halves():
    ids, _objects, _x, _signal, trials, _ = _synthetic(per_object=10, reps=6)
    n, reps, m = trials.shape
    values = trials.reshape(n * reps, m)
    stim, rep = np.repeat(ids, reps), np.tile(np.arange(reps), n)
    keep = ~((stim == ids[0]) & (rep >= 1))  # stimulus 0 has a single trial: absent from one half
    ceiling = brainscore.internal_consistency(values[keep], stim[keep], rep[keep])
    assert np.isfinite(ceiling.per_split).all() and 0 < ceiling.value < 1


def test_normalisations_are_both_conventions_with_labels():
    out = brainscore.normalisations(0.5, 0.8)
    assert out["brainscore_pre2026"]["value"] == pytest.approx((0.5 / 0.8) ** 2)
    assert out["brainscore_pr2169"]["value"] == pytest.approx(0.5**2 / 0.8)
    assert "2026-01-13" in out["brainscore_pr2169"]["dates"] and "#2169" in out["brainscore_pr2169"]["name"]
    assert all(v["value"] is None for v in brainscore.normalisations(0.5, None).values())
    assert all(v["value"] is None for v in brainscore.normalisations(0.5, -0.1).values())


def test_too_few_stimuli_per_object_is_a_clear_error():
    with pytest.raises(brainscore.ProtocolError, match="at least 2 stimuli per object_name"):
        brainscore.cv_splits(["a", "b", "b", "b", "c"] * 1)
