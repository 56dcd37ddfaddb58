"""The paired bootstrap of differences between submissions, against a plain numpy recomputation.

``bootstrap_summary`` stores each submission's mean r on the split's shared
image resamples; ``paired_difference`` bootstraps the difference of two such
summaries. Here the same resamples are applied by fancy indexing to the raw
predictions and every per-neuroid r is recomputed from its definition, so the
test shares nothing with the weighted-moment fast path but the indices.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from itbench.scoring import metrics as M


def _pearson_cols(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-column Pearson r, textbook formula (NaN for a constant column)."""
    pc, tc = p - p.mean(axis=0), t - t.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pc * tc).sum(axis=0) / np.sqrt((pc**2).sum(axis=0) * (tc**2).sum(axis=0))


def _world(n: int = 60, m: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, m))
    target = signal + 0.5 * rng.normal(size=(n, m))
    return {"signal": signal, "target": target, "rng_state": np.array([seed])}


def test_paired_difference_matches_independent_numpy_bootstrap() -> None:
    n, m = 60, 40
    w = _world(n, m)
    rng = np.random.default_rng(1)
    pred_a = w["signal"] + 0.9 * rng.normal(size=(n, m))
    pred_b = w["signal"] + 1.1 * rng.normal(size=(n, m))
    ids = [f"img{i:03d}" for i in range(n)]
    a = M.bootstrap_summary(pred_a, w["target"], ids, n_boot=400)
    b = M.bootstrap_summary(pred_b, w["target"], ids, n_boot=400)
    assert a["key"] == b["key"] and len(a["mean_r"]) == 400

    key, idx = M.shared_resample_indices(ids, 400)
    assert key == a["key"]
    ref_a = np.array([np.nanmean(_pearson_cols(pred_a[i], w["target"][i])) for i in idx])
    ref_b = np.array([np.nanmean(_pearson_cols(pred_b[i], w["target"][i])) for i in idx])
    np.testing.assert_allclose(a["mean_r"], ref_a, atol=1e-6)  # stored rounded to 6 decimals
    np.testing.assert_allclose(b["mean_r"], ref_b, atol=1e-6)

    point_a = np.mean(_pearson_cols(pred_a, w["target"]))
    point_b = np.mean(_pearson_cols(pred_b, w["target"]))
    diff = M.paired_difference(a["mean_r"], b["mean_r"], point_a, point_b)
    lo, hi = np.percentile(ref_a - ref_b, [2.5, 97.5])
    assert diff.delta == pytest.approx(point_a - point_b, abs=1e-12)
    assert diff.low == pytest.approx(lo, abs=2e-6) and diff.high == pytest.approx(hi, abs=2e-6)
    assert diff.low > 0 and not diff.tied and diff.sign == 1  # 0.9 vs 1.1 noise: a is better
    assert M.paired_difference(b["mean_r"], a["mean_r"], point_b, point_a).sign == -1


def test_pairing_is_what_makes_a_small_difference_detectable() -> None:
    """Two models sharing most of their errors: unpaired CIs overlap, the paired one excludes 0."""
    n, m = 80, 30
    w = _world(n, m, seed=3)
    rng = np.random.default_rng(4)
    shared = rng.normal(size=(n, m))
    pred_a = w["signal"] + shared
    pred_b = w["signal"] + shared + 0.25 * rng.normal(size=(n, m))
    ids = [f"s{i}" for i in range(n)]
    a = M.bootstrap_summary(pred_a, w["target"], ids, n_boot=500)
    b = M.bootstrap_summary(pred_b, w["target"], ids, n_boot=500)
    ra, rb = np.array(a["mean_r"]), np.array(b["mean_r"])
    ci_a, ci_b = np.percentile(ra, [2.5, 97.5]), np.percentile(rb, [2.5, 97.5])
    assert ci_a[0] < ci_b[1]  # the marginal intervals overlap ...
    diff = M.paired_difference(ra, rb, ra.mean(), rb.mean())
    assert diff.low > 0 and not diff.tied  # ... yet a beats b on almost every resample


def test_identical_predictions_are_tied() -> None:
    n, m = 58, 50
    w = _world(n, m, seed=5)
    rng = np.random.default_rng(6)
    pred = w["signal"] + rng.normal(size=(n, m))
    ids = [f"x{i}" for i in range(n)]
    a = M.bootstrap_summary(pred, w["target"], ids, n_boot=300)
    same = M.paired_difference(a["mean_r"], a["mean_r"], 0.5, 0.5)
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0) and same.tied and same.sign == 0
    # a copy with a little extra noise on a few images: the difference is not resolvable
    twin = pred.copy()
    twin[:3] += 0.05 * rng.normal(size=(3, m))
    b = M.bootstrap_summary(twin, w["target"], ids, n_boot=300)
    diff = M.paired_difference(a["mean_r"], b["mean_r"], 0.5, 0.5)
    assert diff.low < 0 < diff.high and diff.tied


def test_shared_resamples_do_not_depend_on_image_order_or_run_seed() -> None:
    n, m = 50, 12
    w = _world(n, m, seed=7)
    pred = w["signal"] + np.random.default_rng(8).normal(size=(n, m))
    ids = np.array([f"stim{i:02d}" for i in range(n)])
    perm = np.random.default_rng(9).permutation(n)
    one = M.bootstrap_summary(pred, w["target"], ids, n_boot=200)
    shuffled = M.bootstrap_summary(pred[perm], w["target"][perm], ids[perm], n_boot=200)
    assert one["key"] == shuffled["key"]
    np.testing.assert_allclose(one["mean_r"], shuffled["mean_r"], atol=2e-6)
    # the recipe is the documented one: sha1 of method, seed, n_boot and the sorted ids
    text = f"{M.PAIRED_METHOD}\n{M.PAIRED_SEED}\n200\n" + "\n".join(sorted(ids.tolist()))
    assert one["key"] == hashlib.sha1(text.encode()).hexdigest()
    # another split (one image fewer) gets another key: records of different splits never pair
    assert M.bootstrap_summary(pred[1:], w["target"][1:], ids[1:], n_boot=200)["key"] != one["key"]


def test_normalized_resamples_share_split_halves_and_include_ceiling_noise() -> None:
    rng = np.random.default_rng(10)
    n, reps, m = 60, 8, 20
    signal = rng.normal(size=(n, 1, m))
    trials = signal + 1.5 * rng.normal(size=(n, reps, m))
    target = trials.mean(axis=1)
    pred = signal[:, 0] + 0.7 * rng.normal(size=(n, m))
    ids = [f"i{i}" for i in range(n)]
    a = M.bootstrap_summary(pred, target, ids, trials=trials, n_boot=200)
    again = M.bootstrap_summary(pred, target, ids, trials=trials, n_boot=200)
    assert a["normalized_r"] == again["normalized_r"]  # same resamples and split-halves
    # at fixed images, redrawing the split-halves moves the normalised score: the CI now
    # carries that (ceiling) variability, which a fixed split could not
    ones = np.ones((1, n))
    draws = [M._normalized_resamples(ones, pred, target, trials, 1, s)[0] for s in range(8)]
    assert np.std(draws) > 1e-3
    point = M.normalized_r(M.pearson_r(pred, target), M.split_half_ceiling(trials, 10, seed=0)).score
    lo, hi = M.bootstrap_normalized_ci(pred, target, trials, n_boot=300)
    assert lo < point < hi


def test_differences_below_the_stored_precision_are_not_real() -> None:
    base = np.random.default_rng(11).normal(0.3, 0.02, 500)
    tiny = M.paired_difference(np.round(base + 2e-6, 6), np.round(base, 6), 0.300002, 0.3)
    assert tiny.low > 0 and tiny.tied and tiny.sign == 0  # consistent, but at the rounding level
    small = M.paired_difference(base + 1e-3, base, 0.301, 0.3)
    assert not small.tied and small.sign == 1
    exact = M.paired_difference(np.round(base + 2e-6, 6), np.round(base, 6), 0.300002, 0.3, resolution=0.0)
    assert not exact.tied


def test_rank_groups_chain_adjacent_ties() -> None:
    assert M.rank_groups([]) == [(1, 1)]
    assert M.rank_groups([False, False]) == [(1, 1), (2, 2), (3, 3)]
    assert M.rank_groups([True, False, True, True]) == [(1, 2), (1, 2), (3, 5), (3, 5), (3, 5)]


def test_paired_difference_rejects_unpaired_samples() -> None:
    with pytest.raises(M.MetricInputError, match="same shared resamples"):
        M.paired_difference([0.1, 0.2], [0.1, 0.2, 0.3], 0.1, 0.1)


def test_benchmark_score_stores_the_split_s_shared_resamples() -> None:
    """What the runner writes into a record: the demo val split's resamples, ready to pair."""
    from itbench.harness.record import BootstrapSummary
    from itbench.scoring.benchmark import load_benchmark

    bench = load_benchmark("demo")
    target = bench.responses("val")
    pred = target + np.random.default_rng(12).normal(0.0, target.std(), target.shape)
    out = bench.score(pred, "val", n_boot=20)
    boot = BootstrapSummary.model_validate(out["bootstrap"])
    key, idx = M.shared_resample_indices(bench.stimulus_ids("val"))
    assert boot.key == key and boot.n_boot == len(idx) == len(boot.mean_r)
    assert boot.normalized_r is not None and len(boot.normalized_r) == boot.n_boot  # demo has trials
    for b in (0, 1, 999):
        expected = np.nanmean(_pearson_cols(pred[idx[b]], target[idx[b]]))
        assert boot.mean_r[b] == pytest.approx(expected, abs=1e-6)
    assert bench.score(pred, "val", n_boot=0)["bootstrap"] is None
