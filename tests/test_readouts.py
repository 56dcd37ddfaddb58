"""Torch readouts against scikit-learn (LinearRegression, RidgeCV, Ridge, PCA)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.linear_model import Ridge as SkRidge

from itbench.errors import ItbenchError
from itbench.models import readouts as R

ALPHAS = np.logspace(-3, 6, 10)


def _regression(n: int, p: int, t: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlated features with an offset, targets of very different noise levels (so alphas vary)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(p, p)) / np.sqrt(p) + np.eye(p)
    x = rng.normal(size=(n + 40, p)) @ mix * np.linspace(2, 0.2, p) + 1.5
    w = rng.normal(size=(p, t)) * rng.uniform(0, 1, t)
    y = x @ w + rng.normal(size=(n + 40, t)) * np.logspace(-1, 1.5, t) + 3.0
    return x[:n], y[:n], x[n:]


def _rel(a, b) -> float:
    """Largest error relative to the largest reference value."""
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _as(kind: str, a: np.ndarray, dtype: str):
    a = a.astype(dtype)
    return torch.from_numpy(a) if kind == "torch" else a


# --------------------------------------------------------------------------- ridge


@pytest.mark.parametrize("n, p", [(150, 40), (50, 200)])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_ridge_gcv_matches_sklearn_ridgecv(n, p, kind):
    x, y, x_new = _regression(n, p)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(x, y)
    ours = R.RidgeGCV(ALPHAS).fit(_as(kind, x, "float64"), _as(kind, y, "float64"))
    assert ours.mode_ == ("cov" if n > p else "gram")
    np.testing.assert_allclose(ours.loo_mse_.T, ref.cv_results_.mean(axis=0), rtol=1e-6)  # every alpha
    assert np.mean(ours.alpha_ == ref.alpha_) >= 0.99
    assert len(set(ref.alpha_)) > 2  # the test data really exercises per-target choice
    np.testing.assert_allclose(ours.best_score_, ref.best_score_, rtol=1e-6)
    pred = ours.predict(_as(kind, x_new, "float64"))
    assert isinstance(pred, torch.Tensor) == (kind == "torch")
    assert _rel(pred, ref.predict(x_new)) < 1e-5
    assert _rel(ours.coef_, ref.coef_) < 1e-5


def test_ridge_loo_error_equals_brute_force_leave_one_out():
    # independent of sklearn: refit without each image, in the near-interpolating p > n regime
    x, y, _ = _regression(25, 60, t=2)
    ours = R.RidgeGCV(ALPHAS[:4]).fit(x, y)
    for i_alpha, alpha in enumerate(ALPHAS[:4]):
        errors = []
        for i in range(len(x)):
            keep = np.arange(len(x)) != i
            model = SkRidge(alpha=alpha, solver="cholesky").fit(x[keep], y[keep])
            errors.append((y[i] - model.predict(x[i : i + 1])[0]) ** 2)
        np.testing.assert_allclose(ours.loo_mse_[i_alpha], np.mean(errors, axis=0), rtol=1e-6)


def test_ridge_gcv_float32_input_still_matches():
    x, y, x_new = _regression(60, 120)
    x32 = x.astype(np.float32)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x32, y)  # sklearn upcasts to float64
    ours = R.RidgeGCV(ALPHAS).fit(torch.from_numpy(x32), torch.from_numpy(y))
    assert np.mean(ours.alpha_ == ref.alpha_) >= 0.99
    assert (
        _rel(ours.predict(torch.from_numpy(x_new.astype(np.float32))), ref.predict(x_new.astype(np.float32)))
        < 1e-5
    )


def test_ridge_gcv_single_alpha_and_no_intercept_variants():
    x, y, x_new = _regression(80, 30)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=False).fit(x, y)
    ours = R.RidgeGCV(ALPHAS, alpha_per_target=False).fit(x, y)
    assert np.all(ours.alpha_ == ref.alpha_)
    assert _rel(ours.predict(x_new), ref.predict(x_new)) < 1e-5
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=False).fit(x, y)
    ours = R.RidgeGCV(ALPHAS, fit_intercept=False).fit(x, y)
    assert np.mean(ours.alpha_ == ref.alpha_) >= 0.99
    assert _rel(ours.predict(x_new), ref.predict(x_new)) < 1e-5


@pytest.mark.parametrize("n, p", [(120, 30), (40, 300)])
def test_fixed_alpha_ridge_matches_sklearn_ridge(n, p):
    x, y, x_new = _regression(n, p)
    ref = SkRidge(alpha=0.1).fit(x, y)
    for model in (R.Ridge(0.1), R.RidgeGCV(alphas=0.1)):
        model.fit(x, y)
        assert _rel(model.predict(x_new), ref.predict(x_new)) < 1e-5
        np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=1e-6, atol=1e-8)
        assert np.all(model.alpha_ == 0.1)


def test_one_dimensional_target_round_trips():
    x, y, x_new = _regression(60, 10)
    ref = RidgeCV(alphas=ALPHAS).fit(x, y[:, 0])
    ours = R.RidgeGCV(ALPHAS).fit(x, y[:, 0])
    pred = ours.predict(x_new)
    assert pred.shape == (40,) and ours.coef_.shape == (10,)
    assert ours.alpha_[0] == ref.alpha_
    assert _rel(pred, ref.predict(x_new)) < 1e-5


# --------------------------------------------------------------------------- OLS


@pytest.mark.parametrize("n, p", [(150, 40), (40, 150)])
@pytest.mark.parametrize("solver", ["gram", "svd"])
def test_ols_matches_linear_regression_including_min_norm(n, p, solver):
    x, y, x_new = _regression(n, p)
    ref = LinearRegression().fit(x, y)
    ours = R.OLS(solver=solver).fit(torch.from_numpy(x), torch.from_numpy(y))
    assert _rel(ours.predict(torch.from_numpy(x_new)), ref.predict(x_new)) < 1e-5
    assert _rel(ours.coef_, ref.coef_) < 1e-5
    if p > n:  # the minimum-norm solution of the centred problem: pinv(Xc) Yc
        xc, yc = x - x.mean(0), y - y.mean(0)
        assert _rel(ours.coef_.numpy().T, np.linalg.pinv(xc) @ yc) < 1e-6
        assert ours.rank_ == n - 1  # centring removes one dimension


def test_ols_without_intercept_and_float32():
    x, y, x_new = _regression(100, 20)
    ref = LinearRegression(fit_intercept=False).fit(x, y)
    assert _rel(R.OLS(fit_intercept=False).fit(x, y).predict(x_new), ref.predict(x_new)) < 1e-5
    x32 = x.astype(np.float32)
    ref32 = LinearRegression().fit(x32.astype(np.float64), y)
    ours = R.OLS().fit(x32, y)
    assert ours.predict(x_new.astype(np.float32)).dtype == np.float64
    assert _rel(ours.predict(x_new.astype(np.float32)), ref32.predict(x_new.astype(np.float32))) < 1e-5


def test_blocked_passes_equal_single_block(monkeypatch):
    x, y, x_new = _regression(50, 90)
    whole = R.RidgeGCV(ALPHAS).fit(x, y).predict(x_new)
    monkeypatch.setattr(R, "_BLOCK_ELEMENTS", 500)  # forces many row and column blocks
    blocked = R.RidgeGCV(ALPHAS).fit(x, y).predict(x_new)
    assert _rel(blocked, whole) < 1e-10


# --------------------------------------------------------------------------- PCA


def _spectrum_data(n: int = 300, p: int = 400, rank: int = 30, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Low rank with well-separated decaying variances, plus weak noise and an offset."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, rank)) * (10.0 * 0.8 ** np.arange(rank))
    basis = np.linalg.qr(rng.normal(size=(p, rank)))[0].T
    return (scores @ basis + 0.01 * rng.normal(size=(n, p)) + 2.0).astype(dtype)


def _same_up_to_sign(a: np.ndarray, b: np.ndarray, axis: int) -> float:
    """Max relative difference after aligning the sign of each component."""
    signs = np.sign(np.sum(a * b, axis=axis, keepdims=True))
    return float(np.abs(a * signs - b).max() / np.abs(b).max())


@pytest.mark.parametrize("solver", ["eigh", "randomized"])
@pytest.mark.parametrize("shape", [(300, 400), (400, 60)])
def test_pca_matches_sklearn_randomized(solver, shape):
    x = _spectrum_data(*shape)
    k = 10
    ref = SkPCA(k, svd_solver="randomized", random_state=0).fit(x)
    ours = R.PCA(k, svd_solver=solver).fit(x)
    assert ours.solver_ == solver
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=0.01)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=0.01)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-5)
    assert _same_up_to_sign(ours.components_, ref.components_, axis=1) < 1e-3
    assert _same_up_to_sign(ours.transform(x), ref.transform(x), axis=0) < 1e-3
    np.testing.assert_allclose(
        R.PCA(k, svd_solver=solver).fit_transform(x),
        ours.transform(x),
        atol=1e-3 * np.abs(ref.transform(x)).max(),
    )


def test_pca_keeps_components_far_down_a_steep_spectrum():
    # variances over 8 decades (pixel-like); nothing may be zeroed or lose accuracy
    rng = np.random.default_rng(2)
    n, p, rank = 120, 300, 60
    scores = rng.normal(size=(n, rank)) * np.logspace(0, -4, rank)
    x = scores @ np.linalg.qr(rng.normal(size=(p, rank)))[0].T + 5.0
    ref = SkPCA(40, svd_solver="full").fit(x)
    ours = R.PCA(40).fit(x)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-6)
    assert _same_up_to_sign(ours.components_, ref.components_, axis=1) < 1e-5


def test_pca_eigh_is_exact_where_randomized_is_not():
    # flat-ish tail: sklearn's randomized solver loses percents there, the Gram route does not
    x = _spectrum_data(200, 500, rank=150, seed=4)
    exact = SkPCA(120, svd_solver="full").fit(x.astype(np.float64)).explained_variance_
    ours = R.PCA(120, svd_solver="eigh").fit(x).explained_variance_
    randomized = SkPCA(120, svd_solver="randomized", random_state=0).fit(x).explained_variance_
    np.testing.assert_allclose(ours, exact, rtol=1e-3)  # float32 input: ~2e-4 at the noise floor
    assert np.max(np.abs(randomized / exact - 1)) > 0.01


def test_pca_torch_in_torch_out_whiten_and_float64():
    x = _spectrum_data(200, 250, dtype=np.float64)
    ref = SkPCA(8, whiten=True, svd_solver="full").fit(x)
    ours = R.PCA(8, whiten=True).fit(torch.from_numpy(x))
    out = ours.transform(torch.from_numpy(x))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert isinstance(ours.components_, torch.Tensor)
    assert _same_up_to_sign(out.numpy(), ref.transform(x), axis=0) < 1e-6
    np.testing.assert_allclose(out.numpy().std(0, ddof=1), 1.0, rtol=1e-6)
    # same sign convention as sklearn: no flips needed
    np.testing.assert_allclose(ours.components_.numpy(), ref.components_, atol=1e-8)


def test_pca_float32_tensor_is_not_modified_and_blocking_is_invisible(monkeypatch):
    x = torch.from_numpy(_spectrum_data(120, 300))
    before = x.clone()
    whole = R.PCA(5).fit(x).transform(x)
    monkeypatch.setattr(R, "_BLOCK_ELEMENTS", 2000)
    blocked = R.PCA(5).fit(x).transform(x)
    assert torch.equal(x, before) and whole.dtype == torch.float32
    assert _same_up_to_sign(blocked.numpy(), whole.numpy(), axis=0) < 1e-4


def test_pca_auto_solver_choice():
    pca = R.PCA(5)
    assert pca._choose_solver(2592, 200_000, 1000) == "eigh"
    assert pca._choose_solver(2592, 200_000, 10) == "randomized"


def test_pca_clamps_too_many_components_with_a_warning():
    x = _spectrum_data(20, 50, rank=5)
    with pytest.warns(UserWarning, match="using 20 components"):
        pca = R.PCA(100).fit(x)
    assert pca.n_components_ == 20 and pca.components_.shape == (20, 50)
    assert np.isfinite(pca.components_).all()
    assert np.sum(pca.explained_variance_ratio_) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- failures


def test_readout_errors_are_user_errors():
    x, y, _ = _regression(30, 5)
    cases = [
        lambda: R.RidgeGCV(alphas=[-1.0]),
        lambda: R.PCA(0),
        lambda: R.PCA(3, svd_solver="arpack"),
        lambda: R.OLS(solver="qr"),
        lambda: R.OLS().fit(x, y[:10]),
        lambda: R.OLS().fit(x[:, :, None], y),
        lambda: R.RidgeGCV().predict(x),
        lambda: R.OLS().fit(x, y).predict(x[:, :3]),
        lambda: R.PCA(2).transform(x),
        lambda: R.PCA(2).fit(np.where(np.arange(5) == 2, np.nan, x)),
        lambda: R.OLS().fit(x, np.where(y > 1e9, y, np.nan)),
    ]
    for case in cases:
        with pytest.raises(R.ReadoutError) as err:
            case()
        assert isinstance(err.value, ItbenchError) and err.value.hint


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, y, x_new = _regression(60, 150)
    cpu = R.RidgeGCV(ALPHAS).fit(x, y)
    gpu = R.RidgeGCV(ALPHAS, device="cuda").fit(x, y)
    assert np.all(cpu.alpha_ == gpu.alpha_)
    out = gpu.predict(torch.from_numpy(x_new).cuda())
    assert out.device.type == "cuda"
    assert _rel(out.cpu(), cpu.predict(x_new)) < 1e-8
    xs = _spectrum_data(100, 200)
    assert (
        _same_up_to_sign(R.PCA(5, device="cuda").fit(xs).transform(xs), R.PCA(5).fit(xs).transform(xs), 0)
        < 1e-3
    )


def test_no_warnings_on_the_happy_path():
    x, y, x_new = _regression(40, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R.RidgeGCV().fit(x, y).predict(x_new)
        R.OLS().fit(x, y).predict(x_new)
        R.PCA(5).fit(x.astype(np.float32)).transform(x_new.astype(np.float32))
