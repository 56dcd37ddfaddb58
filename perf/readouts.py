"""Readout benchmarks: itbench's torch OLS / RidgeGCV / PCA against scikit-learn.

``run(quick, device)`` returns rows for ``perf/run.py``. Each row times the two
implementations on the same data in the same process (reference first), and
checks that they agree:

* ``ridge_gcv_1k``: ``RidgeGCV`` vs ``RidgeCV(alpha_per_target=True)``, 2592 x
  1000 -> 168 targets (PCA-sized features). Target >= 3x.
* ``ridge_gcv_50k``: the same on 2592 x 50,000 (raw layer features). Target
  >= 1.2x. sklearn is timed once (slow).
* ``ols_1k`` / ``ols_50k``: ``OLS`` vs ``LinearRegression`` (the 50k case is
  the p > n minimum-norm solution). Target: not slower (>= 1x).
* ``pca_200k``: ``PCA(1000)`` vs ``sklearn PCA(1000, svd_solver="randomized")``
  on 2592 x 200,000 float32 (pixel-sized input). Target >= 3x. sklearn once.
* ``pca_200k_randomized`` (full mode): our randomized solver on the same data,
  for transparency (``auto`` picks the exact Gram route there).

Data are synthetic with a power-law spectrum (low rank + isotropic noise, as
deep-net features and natural images have), float32 like extracted features;
responses are a linear function of the features plus noise whose level
varies over targets, so the chosen alphas vary. Accuracy: fraction of targets
with the same alpha; prediction error on held-out images, per target
``max|ours - sklearn| / max|sklearn|``, worst target; explained-variance
relative difference.

Run directly: ``python -m perf.readouts [--quick] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from itbench.models import readouts as R

N_TRAIN, N_TEST, N_TARGETS = 2592, 288, 168
ALPHAS = np.logspace(-3, 6, 10)


# --------------------------------------------------------------------------- data


def _features(n: int, p: int, seed: int, rank: int = 1200, noise: float = 0.7) -> np.ndarray:
    """float32 (n, p): power-law spectrum (variance of component k ~ 1/k) plus noise.

    The isotropic noise floor sits at about ``noise**2`` times the variance of
    the last low-rank component, so the spectrum decays over its whole range.

    Built block by block in torch (fast RNG, no float64 temporaries), so the
    2 GB pixel-sized case costs one matrix product.
    """
    gen = torch.Generator().manual_seed(seed)
    rank = min(rank, n, p)
    scales = torch.arange(1, rank + 1, dtype=torch.float32) ** -0.5
    left = torch.randn(n, rank, generator=gen) * scales
    right = torch.randn(rank, p, generator=gen) / np.sqrt(rank)
    x = torch.empty(n, p)
    for start in range(0, n, 256):
        rows = slice(start, min(start + 256, n))
        x[rows] = left[rows] @ right + (noise / rank) * torch.randn(x[rows].shape, generator=gen)
    x += torch.rand(p, generator=gen)  # positive offsets, like post-ReLU features
    return x.numpy()


def _regression(p: int, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Train/test features and 168 targets with per-target noise levels."""
    x = _features(n_train + n_test, p, seed)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((p, N_TARGETS)).astype(np.float32) / np.sqrt(p)
    signal = x @ w
    signal /= signal.std(0)
    noise = rng.standard_normal(signal.shape) * np.logspace(-0.5, 1.0, N_TARGETS)
    y = (signal + noise).astype(np.float64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# --------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn: Callable[[], Any], repeats: int, device: str = "cpu") -> tuple[list[float], Any]:
    """Wall-clock seconds of ``repeats`` calls (synchronised on CUDA) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        gc.collect()
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times, out


def _warm_up(device: str) -> None:
    """One tiny fit of each implementation: thread pools, CUDA context and handles start untimed."""
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.linear_model import LinearRegression, RidgeCV

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 96)).astype(np.float32), rng.standard_normal((64, 3))
    dev = None if device == "cpu" else device
    for data in (x, x[:, :32]):  # both the gram and the cov branch
        R.RidgeGCV(ALPHAS, device=dev).fit(data, y).predict(data)
        R.OLS(device=dev).fit(data, y).predict(data)
        R.PCA(8, device=dev).fit(data).transform(data)
        RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(data, y)
        LinearRegression().fit(data, y)
        SkPCA(8, svd_solver="randomized", random_state=0).fit(data)
    _sync(device)


def _pred_error(ours: Any, ref: np.ndarray) -> float:
    """Worst target's ``max|ours - ref| / max|ref|`` over held-out images."""
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    ref = ref.reshape(len(ref), -1)
    return float(np.max(np.abs(ours.reshape(ref.shape) - ref).max(0) / np.abs(ref).max(0)))


def _row(
    task: str,
    ours: str,
    ref: str,
    ours_t: list[float],
    ref_t: list[float],
    target_ratio: float | None,
    accuracy: str,
    accuracy_ok: bool,
    notes: str,
) -> dict:
    """One result row (the format perf/run.py prints; see perf/README.md); no target: information only."""
    ours_s, ref_s = statistics.median(ours_t), statistics.median(ref_t)
    ratio = ref_s / ours_s
    return {
        "task": task,
        "ours": ours,
        "reference": ref,
        "ours_s": round(ours_s, 4),
        "ref_s": round(ref_s, 4),
        "ratio": round(ratio, 3),
        "ours_times": [round(t, 4) for t in ours_t],
        "ref_times": [round(t, 4) for t in ref_t],
        "accuracy": accuracy,
        "accuracy_ok": bool(accuracy_ok),
        "target": f">= {target_ratio:g}x" if target_ratio else "info",
        "met": bool(ratio >= target_ratio and accuracy_ok) if target_ratio else None,
        "notes": notes,
    }


def _repeat_note(ours_t: list[float], ref_t: list[float]) -> str:
    return f"median of {len(ours_t)} (ours) / {len(ref_t)} (sklearn) runs" + (
        "; sklearn timed once (slow baseline)" if len(ref_t) == 1 else ""
    )


# --------------------------------------------------------------------------- tasks


def ridge_row(p: int, quick: bool, device: str, target_ratio: float, ref_repeats: int) -> dict:
    """RidgeGCV vs RidgeCV(alpha_per_target=True) on n x p -> 168."""
    from sklearn.linear_model import RidgeCV

    n = 600 if quick else N_TRAIN
    x, y, x_test, _ = _regression(p, n, N_TEST if not quick else 100, seed=p)
    ref_t, ref = _time(lambda: RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x, y), ref_repeats)
    ref_pred = ref.predict(x_test)
    ref_alpha = np.array(ref.alpha_)
    del ref
    dev = None if device == "cpu" else device
    ours_t, ours = _time(lambda: R.RidgeGCV(ALPHAS, device=dev).fit(x, y), 1 if quick else 3, device)
    same = float(np.mean(ours.alpha_ == ref_alpha))
    err = _pred_error(ours.predict(x_test), ref_pred)
    return _row(
        f"ridge_gcv_{p // 1000}k" if p >= 1000 else f"ridge_gcv_{p}",
        "RidgeGCV (float64)",
        "sklearn RidgeCV(alpha_per_target=True)",
        ours_t,
        ref_t,
        target_ratio,
        f"same alpha {same:.1%}, max rel pred err {err:.1e}",
        same >= 0.99 and err <= 1e-5,
        f"{n} x {p} float32 -> {N_TARGETS} targets, {len(ALPHAS)} alphas, {len(set(ref_alpha))} distinct "
        f"chosen; ours mode={ours.mode_} on {device}; {_repeat_note(ours_t, ref_t)}",
    )


def ols_row(p: int, quick: bool, device: str, ref_repeats: int) -> dict:
    """OLS vs LinearRegression (min-norm when p > n), at equal (float64) precision.

    sklearn keeps float32 input in float32 (fast, but off by ~1e-4..1e-3 here),
    so the timed reference is sklearn on a float64 copy of the features: the
    same precision as ours, and the predictions we check against. sklearn's
    float32 fit is timed once too and reported in the notes.
    """
    from sklearn.linear_model import LinearRegression

    n = 600 if quick else N_TRAIN
    x, y, x_test, _ = _regression(p, n, N_TEST if not quick else 100, seed=p + 1)
    t32, ref = _time(lambda: LinearRegression().fit(x, y), 1)
    pred32 = ref.predict(x_test)
    del ref
    x64 = x.astype(np.float64)
    ref_t, ref = _time(lambda: LinearRegression().fit(x64, y), ref_repeats)  # noqa: F821 (x64 is bound; ruff sees the later del)
    ref_pred = ref.predict(x_test.astype(np.float64))
    del ref, x64
    gc.collect()
    err32 = _pred_error(pred32, ref_pred)
    dev = None if device == "cpu" else device
    ours_t, ours = _time(lambda: R.OLS(device=dev).fit(x, y), 1 if quick else 3, device)
    err = _pred_error(ours.predict(x_test), ref_pred)
    return _row(
        f"ols_{p // 1000}k" if p >= 1000 else f"ols_{p}",
        "OLS (float64, gram)",
        "sklearn LinearRegression (float64 copy)",
        ours_t,
        ref_t,
        1.0,
        f"max rel pred err {err:.1e}",
        err <= 1e-5,
        f"{n} x {p} float32 -> {N_TARGETS} targets ({'p > n: minimum norm' if p > n else 'n > p'}), "
        f"rank {ours.rank_}; sklearn on the float32 input itself: {t32[0]:.2f} s, off by {err32:.1e}; "
        f"on {device}; {_repeat_note(ours_t, ref_t)}",
    )


def pca_rows(quick: bool, device: str, with_randomized: bool) -> list[dict]:
    """PCA(1000) on 2592 x 200k float32 vs sklearn's randomized PCA (and our randomized solver)."""
    from sklearn.decomposition import PCA as SkPCA

    n, p, k = (600, 20_000, 100) if quick else (N_TRAIN, 200_000, 1000)
    x = _features(n, p, seed=7, rank=int(1.2 * k))
    ref_t, ref = _time(lambda: SkPCA(k, svd_solver="randomized", random_state=0).fit(x), 1)
    ref_ev, _ref_evr = ref.explained_variance_, ref.explained_variance_ratio_
    ref_proj = ref.transform(x[:64])[:, :20]
    del ref
    gc.collect()
    dev = None if device == "cpu" else device
    rows = []
    solvers = ["auto", "randomized"] if with_randomized else ["auto"]
    for solver in solvers:
        repeats = 1 if quick or solver == "randomized" else 3
        ours_t, ours = _time(lambda s=solver: R.PCA(k, svd_solver=s, device=dev).fit(x), repeats, device)
        ev = np.asarray(ours.explained_variance_)
        top = max(1, k // 10)  # the well-separated head of the spectrum
        ev_top = float(np.max(np.abs(ev[:top] / ref_ev[:top] - 1)))
        ev_all = float(np.max(np.abs(ev / ref_ev - 1)))
        evr_sum = float(abs(ev.sum() / ref_ev.sum() - 1))
        proj = ours.transform(x[:64])
        proj = np.asarray(proj.cpu() if isinstance(proj, torch.Tensor) else proj)[:, :20]
        signs = np.sign(np.sum(proj * ref_proj, axis=0))
        proj_err = float(np.abs(proj * signs - ref_proj).max() / np.abs(ref_proj).max())
        ok = ev_top <= 0.01 and evr_sum <= 0.01 and proj_err <= 0.01
        rows.append(
            _row(
                f"pca_{p // 1000}k" + ("" if solver == "auto" else "_randomized"),
                f"PCA({k}, svd_solver={solver!r}) -> {ours.solver_}",
                "sklearn PCA(svd_solver='randomized')",
                ours_t,
                ref_t,
                3.0 if solver == "auto" else None,
                f"EV rel diff top-{top} {ev_top:.1e} (all {k}: {ev_all:.1e}), total EV {evr_sum:.1e}, "
                f"top-20 projections {proj_err:.1e}",
                ok,
                f"{n} x {p} float32, power-law spectrum (rank {int(1.2 * k)} + noise); sklearn: n_iter='auto' (4), "
                f"10 oversamples; on {device}; {_repeat_note(ours_t, ref_t)}",
            )
        )
        del ours
        gc.collect()
    return rows


TASKS = ("ridge_gcv_1k", "ridge_gcv_50k", "ols_1k", "ols_50k", "pca_200k")


def run(quick: bool = False, device: str = "cpu", only: str | None = None) -> list[dict]:
    """All readout rows (``only``: a substring of the task names to keep)."""

    def keep(name: str) -> bool:
        return only is None or only in name or only == "readouts"

    rows: list[dict] = []
    _warm_up(device)
    small, large = (200, 5000) if quick else (1000, 50_000)
    if keep("ridge_gcv_1k"):
        rows.append(ridge_row(small, quick, device, 3.0, ref_repeats=1 if quick else 3))
    if keep("ridge_gcv_50k"):
        rows.append(ridge_row(large, quick, device, 1.2, ref_repeats=1))
    if keep("ols_1k"):
        rows.append(ols_row(small, quick, device, ref_repeats=1 if quick else 3))
    if keep("ols_50k"):
        rows.append(ols_row(large, quick, device, ref_repeats=1))
    if keep("pca_200k"):
        rows.extend(pca_rows(quick, device, with_randomized=not quick))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    for row in run(args.quick, args.device, args.only):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
